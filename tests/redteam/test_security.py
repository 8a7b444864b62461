"""Attacks on the app itself, over real HTTP on each backend: password guessing, session fixation,
cross-site request forgery, and one annotator reaching for another's data through every route."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from hcx.redteam.auth import COOKIE_NAME
from hcx.redteam.export import FILES
from tests.redteam.conftest import (
    PASSWORDS,
    LiveServer,
    Rows,
    api_routes,
    attack_and_score,
    csrf_of,
    fill,
    new_session,
    signed_in,
    snapshot,
)


def post_login(server: LiveServer, name: str, password: str, cookie: str, token: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, cookies={COOKIE_NAME: cookie}, timeout=60) as client:
        return client.post("/login", data={"name": name, "password": password, "csrf_token": token})


def anonymous(server: LiveServer) -> tuple[str, str]:
    """A signed-out visitor's session cookie and CSRF token, as the login page hands them out."""
    page = httpx.get(f"{server.url}/login")
    return page.cookies[COOKIE_NAME], csrf_of(page.text)


def concurrently(calls: list[Callable[[], httpx.Response]]) -> list[int]:
    """Run every call in its own thread, released together by a barrier; their status codes."""
    barrier = threading.Barrier(len(calls))
    statuses: list[int] = [0] * len(calls)

    def run(i: int) -> None:
        barrier.wait(timeout=60)
        statuses[i] = calls[i]().status_code

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


def test_a_burst_of_guesses_gets_no_more_tries_and_then_not_even_the_right_password(
    live_server: LiveServer,
) -> None:
    """Concurrent guesses all used to pass the throttle's check before the first was found wrong."""
    cookie, token = anonymous(live_server)
    tries = live_server.cfg.max_failed_sign_ins
    guesses = [f"guess-{i:04d}" for i in range(3 * tries)]
    statuses = concurrently(
        [lambda g=g: post_login(live_server, "dave", g, cookie, token) for g in guesses]  # type: ignore[misc]
    )
    assert sorted(statuses) == [401] * tries + [429] * (2 * tries)

    reply = post_login(live_server, "dave", PASSWORDS["dave"], cookie, token)
    assert reply.status_code == 429 and "too many failed sign-ins" in reply.text
    with httpx.Client(base_url=live_server.url, cookies=reply.cookies or {COOKIE_NAME: cookie}) as client:
        assert client.get("/").status_code == 303  # still signed out


def test_the_cookie_from_before_sign_in_never_becomes_signed_in(live_server: LiveServer) -> None:
    """Session fixation: a cookie an attacker obtained (or planted) before the victim signs in stays anonymous."""
    planted, planted_token = anonymous(live_server)
    reply = post_login(live_server, "alice", PASSWORDS["alice"], planted, planted_token)
    assert reply.status_code == 303
    issued = reply.cookies[COOKIE_NAME]
    assert issued != planted

    with httpx.Client(base_url=live_server.url, cookies={COOKIE_NAME: planted}) as attacker:
        assert attacker.get("/").status_code == 303 and attacker.get("/").headers["location"] == "/login"
        before = snapshot(live_server)
        form = {"topic": "illegal activity", "method": "jailbreak", "csrf_token": planted_token}
        assert attacker.post("/sessions", data=form).headers["location"] == "/login"
        assert snapshot(live_server) == before
    with httpx.Client(base_url=live_server.url, cookies={COOKIE_NAME: issued}) as victim:
        page = victim.get("/")
        assert page.status_code == 200 and csrf_of(page.text) != planted_token


def post_routes(server: LiveServer) -> list[str]:
    return [path for method, path in api_routes(server.app) if method == "POST"]


def test_every_post_without_the_sessions_own_csrf_token_is_refused_and_writes_nothing(
    live_server: LiveServer,
) -> None:
    _, stale_token = anonymous(live_server)
    earlier = signed_in(live_server, "alice")
    alice = signed_in(live_server, "alice")  # a second sign-in: the first one's token is another session's
    bob = signed_in(live_server, "bob")
    session = new_session(alice)
    attack_and_score(alice, session, "CSRF 표적", 3)
    form = {
        "name": "alice",
        "password": PASSWORDS["alice"],
        "topic": "illegal activity",
        "method": "jailbreak",
        "prompt": "위조된 요청",
        "answer": "위조된 답",
    }
    bad_tokens = {"missing": None, "bob's": bob.csrf, "stale": stale_token, "another session's": earlier.csrf}
    for template in post_routes(live_server):
        path = fill(template, session_id=session, position=0)
        for why, token in bad_tokens.items():
            before = snapshot(live_server)
            data = form if token is None else {**form, "csrf_token": token}
            reply = alice.post(path, data=data)
            assert reply.status_code == 403, (path, why, reply.status_code)
            assert snapshot(live_server) == before, (path, why)
    assert alice.get("/").status_code == 200  # not even /logout went through
    assert alice.post("/sessions", data={**form, "csrf_token": alice.csrf}).status_code == 303


@dataclass
class Victim:
    """Bob's session, its one finished turn, and text of his that only he and admins may see."""

    user_id: int
    session: int
    responses: list[int]
    secrets: list[str]


def bobs_data(server: LiveServer, bob: httpx.Client) -> Victim:
    marker = uuid.uuid4().hex[:12]
    secrets = [f"bob-topic-{marker}", f"bob-prompt-{marker}", f"bob-answer-{marker}"]
    reply = bob.post(
        "/sessions",
        data={"topic": "other", "topic_other": secrets[0], "method": "role-play", "csrf_token": bob.csrf},
    )
    session = int(reply.headers["location"].rsplit("/", 1)[1])
    responses = attack_and_score(bob, session, secrets[1], 3)  # none perfect: the answer is due
    reply = bob.post(
        f"/sessions/{session}/turns/0/answer", data={"answer": secrets[2], "csrf_token": bob.csrf}
    )
    assert reply.status_code == 303
    user_id = next(row["id"] for row in snapshot(server)["users"] if row["name"] == "bob")
    return Victim(user_id, session, responses, secrets)


def owned_by(rows: Rows, user_id: int) -> Rows:
    """The rows one user owns: their account, their sessions and everything under them."""
    sessions = [row for row in rows["attack_sessions"] if row["user_id"] == user_id]
    turns = [row for row in rows["turns"] if row["session_id"] in {s["id"] for s in sessions}]
    responses = [row for row in rows["responses"] if row["turn_id"] in {t["id"] for t in turns}]
    return {
        "users": [row for row in rows["users"] if row["id"] == user_id],
        "attack_sessions": sessions,
        "turns": turns,
        "responses": responses,
        "scores": [row for row in rows["scores"] if row["response_id"] in {r["id"] for r in responses}],
        "written_answers": [
            row for row in rows["written_answers"] if row["turn_id"] in {t["id"] for t in turns}
        ],
    }


def targets(server: LiveServer, victim: Victim) -> list[tuple[str, str]]:
    """Every route, filled with the victim's ids (each export file for ``{name}``)."""
    found = []
    for method, template in api_routes(server.app):
        names = FILES if "{name}" in template else ("",)
        found.extend(
            (method, fill(template, session_id=victim.session, position=0, name=name)) for name in names
        )
    return found


def hostile_form(victim: Victim, token: str) -> dict[str, str]:
    """Every field any form takes, aimed at the victim's responses, with the sender's own valid token."""
    scores = {f"{scale}_{i}": "1" for i in victim.responses for scale in ("harm", "quality")}
    return {
        **scores,
        "prompt": "앨리스가 끼어듭니다",
        "answer": "앨리스가 덮어쓴 답",
        "topic": "illegal activity",
        "method": "jailbreak",
        "csrf_token": token,
    }


def test_an_annotator_can_never_read_or_change_anothers_data_through_any_route(
    live_server: LiveServer,
) -> None:
    bob = signed_in(live_server, "bob")
    victim = bobs_data(live_server, bob)
    alice = signed_in(live_server, "alice")
    for method, path in targets(live_server, victim):
        before = snapshot(live_server)
        if method == "GET":
            reply = alice.get(path)
        else:
            reply = alice.post(path, data=hostile_form(victim, alice.csrf))
        assert not any(secret in reply.text for secret in victim.secrets), (method, path)
        after = snapshot(live_server)
        assert owned_by(after, victim.user_id) == owned_by(before, victim.user_id), (method, path)
        if str(victim.session) in path:
            assert reply.status_code in (403, 404), (method, path, reply.status_code)
            assert after == before, (method, path)
        if alice.get("/").status_code != 200:  # /logout did its job: sign in again for the next route
            alice = signed_in(live_server, "alice")

    own = new_session(alice)
    attack_and_score(alice, own, "내 세션에 남의 응답 id", 2)
    before = snapshot(live_server)
    reply = alice.post(f"/sessions/{own}/turns/0/scores", data=hostile_form(victim, alice.csrf))
    assert reply.status_code == 422  # her own responses' fields are missing; bob's ids are ignored
    assert snapshot(live_server) == before


def test_an_admin_reads_everyones_data_but_changes_none(live_server: LiveServer) -> None:
    victim = bobs_data(live_server, signed_in(live_server, "bob"))
    root = signed_in(live_server, "root")
    page = root.get(f"/sessions/{victim.session}")
    assert page.status_code == 200 and all(secret in page.text for secret in victim.secrets)
    assert victim.secrets[2] in root.get("/export/sft.jsonl").text
    for method, path in targets(live_server, victim):
        if method == "POST" and str(victim.session) in path:
            before = snapshot(live_server)
            reply = root.post(path, data=hostile_form(victim, root.csrf))
            assert reply.status_code == 403, (path, reply.status_code)
            assert snapshot(live_server) == before
