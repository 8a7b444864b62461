"""The web chat page in real headless Chromium: Korean input (IME included), streaming, multi-turn, reset."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.browser import launch_chromium
from tests.serve.live_server import API_KEY, MAX_TOKENS, LiveServer


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 1100, "height": 760}, locale="ko-KR")
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{live_server.url}/")
    page.fill("#api-key", API_KEY)
    page.dispatch_event("#api-key", "change")
    page.eval_on_selector("#temperature", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }")
    page.fill("#max-tokens", "24")
    page.dispatch_event("#max-tokens", "input")
    yield page
    page.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def _watch_answer_growth(page: Page) -> None:
    """Record the length of the newest answer each time the page changes it."""
    page.evaluate(
        """() => {
        window.answerLengths = [];
        new MutationObserver(() => {
            const answers = document.querySelectorAll('.msg.assistant .text');
            if (answers.length) window.answerLengths.push(answers[answers.length - 1].textContent.length);
        }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
    }"""
    )


def _send(page: Page, text: str, *, with_enter: bool) -> dict:
    """Type ``text`` as a user would and send it; returns the JSON body the page posted."""
    page.click("#input")
    page.keyboard.type(text)
    with page.expect_request("**/v1/chat/completions") as request:
        if with_enter:
            page.keyboard.press("Enter")
        else:
            page.click("#send")
    _wait_for_answer(page)
    return request.value.post_data_json


def _wait_for_answer(page: Page) -> None:
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-state", "done", timeout=60_000)


def _last_answer(page: Page) -> str:
    return page.locator(".msg.assistant .text").last.text_content()


def test_chat_page_streams_a_korean_conversation_and_resets(
    page: Page, live_server: LiveServer, korean_turns, tmp_path: Path, repo_root: Path
):
    first, second = korean_turns[30][:50], korean_turns[31][:50]
    want_first = live_server.expected(
        live_server.chat_ids([{"role": "user", "content": first}]), max_new_tokens=24, temperature=0.0
    ).text
    assert len(want_first) >= 4, "pick a prompt whose answer is long enough to stream in pieces"
    assert page.text_content("#model") == "hcx-tiny"

    _watch_answer_growth(page)
    body = _send(page, first, with_enter=True)
    assert body["messages"] == [{"role": "user", "content": first}]
    assert body["stream"] is True and body["temperature"] == 0 and body["max_tokens"] == 24
    assert _last_answer(page) == want_first
    lengths = page.evaluate("window.answerLengths")
    assert len({n for n in lengths if n > 0}) > 1, f"the answer appeared at once, not streamed: {lengths}"
    assert page.input_value("#input") == ""
    assert "prompt +" in page.text_content("#status")

    screenshot = tmp_path / "chat.png"
    page.screenshot(path=screenshot, full_page=True)
    saved = repo_root / "runs" / "screenshots" / "chat.png"
    saved.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(screenshot, saved)

    body = _send(page, second, with_enter=False)
    history = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": want_first},
        {"role": "user", "content": second},
    ]
    assert body["messages"] == history
    want_second = live_server.expected(live_server.chat_ids(history), max_new_tokens=24, temperature=0.0).text
    assert _last_answer(page) == want_second
    assert page.locator(".msg").count() == 4

    page.click("#reset")
    assert page.locator(".msg").count() == 0
    body = _send(page, second, with_enter=True)
    assert body["messages"] == [{"role": "user", "content": second}]


def test_enter_while_the_ime_composes_does_not_send(page: Page):
    """Korean IMEs compose a syllable over several keys; the Enter that commits it is not a send."""
    sent: list[str] = []
    page.on(
        "request", lambda request: sent.append(request.url) if "chat/completions" in request.url else None
    )
    page.click("#input")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.imeSetComposition", {"text": "ㅎ", "selectionStart": 1, "selectionEnd": 1})
    cdp.send("Input.imeSetComposition", {"text": "한", "selectionStart": 1, "selectionEnd": 1})
    page.keyboard.press("Enter")
    cdp.send("Input.insertText", {"text": "한"})
    page.wait_for_timeout(200)
    assert sent == [] and page.locator(".msg").count() == 0
    assert page.input_value("#input").startswith("한")
    page.keyboard.type("국어")
    page.keyboard.press("Enter")
    _wait_for_answer(page)
    assert len(sent) == 1
    assert page.text_content(".msg.user .text").startswith("한") and "국어" in page.text_content(
        ".msg.user .text"
    )


def test_untrusted_text_is_shown_as_text_and_errors_are_reported(page: Page):
    attack = '<img src=x onerror="window.pwned=1"><b>굵게</b>'
    _send(page, attack, with_enter=True)
    assert page.text_content(".msg.user .text") == attack
    assert page.locator("#log img, #log b").count() == 0
    assert page.evaluate("window.pwned") is None

    page.fill("#max-tokens", str(MAX_TOKENS + 1))
    page.dispatch_event("#max-tokens", "input")
    page.fill("#input", "안녕하세요")
    page.click("#send")
    page.wait_for_selector(".msg.error")
    assert f"at most {MAX_TOKENS} allowed" in page.text_content(".msg.error .text")
    assert page.locator(".msg.assistant[data-state=error]").count() == 1


def _run_to_max_tokens(route: Route) -> None:
    """The page's own request with ``ignore_eos``: the answer cannot end before ``max_tokens``."""
    route.continue_(post_data=json.dumps({**route.request.post_data_json, "ignore_eos": True}))


def test_stop_button_aborts_the_stream_and_frees_the_slot(page: Page, live_server: LiveServer):
    """Deterministic: the answer cannot end by itself, and the engine is held between steps
    from the first visible token until the stop has been clicked."""
    engine = live_server.engine
    live_server.wait_idle()
    computed_before = engine.num_computed_tokens
    page.route("**/v1/chat/completions", _run_to_max_tokens)
    page.fill("#max-tokens", str(MAX_TOKENS))
    page.dispatch_event("#max-tokens", "input")
    page.fill("#input", "아주 긴 이야기를 들려주세요")
    page.click("#send")
    expect(page.locator(".msg.assistant .text").last).not_to_have_text("")
    with live_server.api.streams.step_lock:
        assert engine.num_computed_tokens - computed_before < MAX_TOKENS, (
            "max_tokens too small to stop in time"
        )
        page.click("#stop")
        expect(page.locator(".msg.assistant").last).to_have_attribute("data-state", "stopped")
    page.unroute("**/v1/chat/completions")
    partial = _last_answer(page)
    live_server.wait_idle()
    assert engine.num_running == 0 and engine.pool.num_free == engine.pool.num_blocks
    assert engine.num_computed_tokens - computed_before < MAX_TOKENS, "the request was aborted, not finished"
    assert page.is_hidden("#stop") and page.is_enabled("#send")

    # The stopped answer stays in the conversation the next turn sends.
    with page.expect_request("**/v1/chat/completions") as request:
        page.fill("#input", "계속")
        page.click("#send")
    _wait_for_answer(page)
    assert request.value.post_data_json["messages"][1] == {"role": "assistant", "content": partial}
