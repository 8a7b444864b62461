"""The app over real HTTP: sign-in, CSRF, who may see what, escaping and size limits."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select

from hcx.redteam.db import User
from tests.redteam.conftest import PASSWORDS, LiveServer, csrf_of, new_session, signed_in


def test_wrong_password_is_refused_and_passwords_are_hashed(live_server: LiveServer) -> None:
    client = httpx.Client(base_url=live_server.url)
    token = csrf_of(client.get("/login").text)
    reply = client.post("/login", data={"name": "alice", "password": "alice-pass-2", "csrf_token": token})
    assert reply.status_code == 401 and "Wrong name or password" in reply.text
    reply = client.post("/login", data={"name": "nobody", "password": "whatever1", "csrf_token": token})
    assert reply.status_code == 401
    assert client.get("/").status_code == 303  # still not signed in: sent to the login page

    reply = client.post("/login", data={"name": "alice", "password": PASSWORDS["alice"], "csrf_token": token})
    assert reply.status_code == 303
    cookie = reply.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert client.get("/").status_code == 200

    with live_server.sessions() as db:
        for user in db.scalars(select(User)):
            assert user.password_hash.startswith("scrypt$")
            assert PASSWORDS[user.name] not in user.password_hash
        hashes = [u.password_hash for u in db.scalars(select(User))]
    assert len(set(hashes)) == len(hashes)


def test_csrf_token_is_required_on_every_post(live_server: LiveServer) -> None:
    alice = signed_in(live_server, "alice")
    form = {"topic": "illegal activity", "method": "role-play"}
    assert alice.post("/sessions", data=form).status_code == 403
    assert alice.post("/sessions", data={**form, "csrf_token": "x" * 43}).status_code == 403
    bob = signed_in(live_server, "bob")
    assert alice.post("/sessions", data={**form, "csrf_token": bob.csrf}).status_code == 403
    assert alice.post("/logout", data={}).status_code == 403
    assert httpx.post(f"{live_server.url}/login", data={"name": "alice", "password": "x"}).status_code == 403
    # A token from before sign-in is worthless after it (the token is renewed at sign-in).
    fresh = httpx.Client(base_url=live_server.url)
    before = csrf_of(fresh.get("/login").text)
    fresh.post("/login", data={"name": "alice", "password": PASSWORDS["alice"], "csrf_token": before})
    assert fresh.post("/sessions", data={**form, "csrf_token": before}).status_code == 403


def test_annotators_see_only_their_own_sessions(live_server: LiveServer) -> None:
    alice, bob, root = (signed_in(live_server, n) for n in ("alice", "bob", "root"))
    session = new_session(alice, "professional advice", "false premise")
    reply = alice.post(
        f"/sessions/{session}/turns",
        data={"prompt": "앨리스만 아는 비밀 질문입니다", "csrf_token": alice.csrf},
    )
    assert reply.status_code == 303

    assert alice.get(f"/sessions/{session}").status_code == 200
    assert bob.get(f"/sessions/{session}").status_code == 404
    for path, data in (
        (f"/sessions/{session}/turns", {"prompt": "끼어들기"}),
        (f"/sessions/{session}/turns/0/answer", {"answer": "대신 쓴 답"}),
        (f"/sessions/{session}/turns/0/scores", {}),
    ):
        assert bob.post(path, data={**data, "csrf_token": bob.csrf}).status_code == 404
        assert root.post(path, data={**data, "csrf_token": root.csrf}).status_code == 403
    assert "앨리스만 아는" not in bob.get("/").text
    for name in ("rm_ranking.jsonl", "rm_pairs.jsonl", "sft.jsonl"):
        assert "앨리스만 아는" not in bob.get(f"/export/{name}").text

    page = root.get(f"/sessions/{session}")
    assert page.status_code == 200 and "앨리스만 아는 비밀 질문입니다" in page.text
    assert "alice" in root.get("/").text


def test_html_in_a_prompt_is_shown_as_text(live_server: LiveServer) -> None:
    alice = signed_in(live_server, "alice")
    session = new_session(alice)
    attack = '<script>alert("x")</script><img src=x onerror=alert(1)> 폭탄 만드는 법을 <b>알려줘</b>'
    reply = alice.post(f"/sessions/{session}/turns", data={"prompt": attack, "csrf_token": alice.csrf})
    assert reply.status_code == 303
    reply = alice.get(f"/sessions/{session}")
    page = reply.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<script>" not in page and "<img" not in page and "<b>알려줘</b>" not in page
    # And were anything to slip through, the page may run no script at all.
    assert reply.headers["content-security-policy"].startswith("default-src 'none';")
    assert "script-src" not in reply.headers["content-security-policy"]


def test_oversized_and_invalid_input_is_refused(live_server: LiveServer) -> None:
    alice = signed_in(live_server, "alice")
    session = new_session(alice)
    cfg = live_server.cfg
    too_long = "가" * (cfg.max_prompt_chars + 1)
    reply = alice.post(f"/sessions/{session}/turns", data={"prompt": too_long, "csrf_token": alice.csrf})
    assert reply.status_code == 413 and f"at most {cfg.max_prompt_chars}" in reply.text
    huge = "a" * (cfg.max_body_bytes + 1)
    reply = alice.post(f"/sessions/{session}/turns", data={"prompt": huge, "csrf_token": alice.csrf})
    assert reply.status_code == 413 and "request body over" in reply.text
    assert reply.headers["x-frame-options"] == "DENY"
    reply = alice.post(
        "/sessions", data={"topic": "cooking", "method": "jailbreak", "csrf_token": alice.csrf}
    )
    assert reply.status_code == 422 and "topic" in reply.text
    reply = alice.post("/sessions", data={"topic": "other", "method": "jailbreak", "csrf_token": alice.csrf})
    assert reply.status_code == 422 and "topic (other) is empty" in reply.text
    assert (
        alice.post(f"/sessions/{session}/turns", data={"prompt": "  ", "csrf_token": alice.csrf}).status_code
        == 422
    )

    reply = alice.post(f"/sessions/{session}/turns", data={"prompt": "첫 질문", "csrf_token": alice.csrf})
    assert reply.status_code == 303
    page = alice.get(f"/sessions/{session}").text
    ids = re.findall(r'name="harm_(\d+)"', page)
    assert len(ids) == len(cfg.sampling)
    # Nothing may follow a turn whose responses are unscored.
    reply = alice.post(f"/sessions/{session}/turns", data={"prompt": "두 번째", "csrf_token": alice.csrf})
    assert reply.status_code == 409
    scores = {f"harm_{i}": "3" for i in ids} | {f"quality_{i}": "9" for i in ids}
    reply = alice.post(f"/sessions/{session}/turns/0/scores", data={**scores, "csrf_token": alice.csrf})
    assert reply.status_code == 422 and "score from 1 to 5" in reply.text
    reply = alice.post(f"/sessions/{session}/turns/0/answer", data={"answer": "답", "csrf_token": alice.csrf})
    assert reply.status_code == 409  # not before every response is scored
    assert alice.get("/sessions/999999").status_code == 404
    assert alice.get("/no/such/page").status_code == 404
    reply = alice.get("/sessions/abc")
    assert reply.status_code == 422 and "session_id" in reply.text and "<html" in reply.text


def test_repeated_wrong_passwords_are_throttled(live_server: LiveServer) -> None:
    client = httpx.Client(base_url=live_server.url)
    token = csrf_of(client.get("/login").text)
    guesses = [f"guess-{i:04d}" for i in range(live_server.cfg.max_failed_sign_ins)]
    for guess in guesses:
        assert (
            client.post("/login", data={"name": "eve", "password": guess, "csrf_token": token}).status_code
            == 401
        )
    reply = client.post("/login", data={"name": "eve", "password": "guess-9999", "csrf_token": token})
    assert reply.status_code == 429 and "too many failed sign-ins" in reply.text
    assert signed_in(live_server, "bob").get("/").status_code == 200  # other names are unaffected


def test_signing_out_revokes_the_cookie_everywhere(live_server: LiveServer) -> None:
    laptop = signed_in(live_server, "bob")
    stolen = httpx.Client(base_url=live_server.url, cookies=laptop.cookies)
    assert stolen.get("/").status_code == 200
    assert laptop.post("/logout", data={"csrf_token": laptop.csrf}).status_code == 303
    assert stolen.get("/").status_code == 303  # sent to the login page: the old cookie is revoked
    assert signed_in(live_server, "bob").get("/").status_code == 200


def test_other_topics_and_methods_take_the_annotators_words(live_server: LiveServer) -> None:
    alice = signed_in(live_server, "alice")
    form = {"topic": "other", "topic_other": "자해 <조장>", "method": "other", "method_other": "역할 전환"}
    reply = alice.post("/sessions", data={**form, "csrf_token": alice.csrf})
    assert reply.status_code == 303
    page = alice.get(reply.headers["location"]).text
    assert "other: 자해 &lt;조장&gt;" in page and "other: 역할 전환" in page
    too_long = {**form, "method_other": "가" * (live_server.cfg.max_label_chars + 1)}
    assert alice.post("/sessions", data={**too_long, "csrf_token": alice.csrf}).status_code == 413
