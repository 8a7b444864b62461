"""Property-based fuzzing of every route over real HTTP, signed in and signed out, on each backend.

Hypothesis draws the path parameters (real ids, negative, huge, text), the form (known and random
field names; missing, huge, unicode, NUL or digit-like values; duplicated fields), how it is encoded
(urlencoded, multipart with any charset, raw non-UTF-8 bytes) and the CSRF token (valid, missing,
wrong). Properties: no response is a 5xx, and a GET or a refused request (4xx) writes nothing.
The app has no OpenAPI schema (it serves HTML forms), so the routes come from ``app.routes``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from hcx.redteam.export import FILES
from tests.redteam.conftest import (
    LiveServer,
    api_routes,
    attack_and_score,
    csrf_of,
    fill,
    new_session,
    signed_in,
    snapshot,
)

SEED = 20261121
EXAMPLES = 40  # per route, signed in and out together, per backend
ANY_PATH = ("ANY", "/{anything}")
FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "/login"): (),
    ("POST", "/login"): ("name", "password"),
    ("POST", "/logout"): (),
    ("GET", "/"): (),
    ("POST", "/sessions"): ("topic", "topic_other", "method", "method_other"),
    ("GET", "/sessions/{session_id}"): (),
    ("POST", "/sessions/{session_id}/turns"): ("prompt",),
    ("POST", "/sessions/{session_id}/turns/{position}/scores"): ("harm_", "quality_"),
    ("POST", "/sessions/{session_id}/turns/{position}/answer"): ("answer",),
    ("GET", "/stats"): (),
    ("GET", "/export"): (),
    ("GET", "/export/{name}"): (),
}
TRICKY_VALUES = [
    "other",
    "illegal activity",
    "jailbreak",
    "3",
    "5",
    "0",
    "-1",
    "²",
    "١",
    "３",
    "9" * 4500,
    "\x00",
    "a\x00b",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "\ufeff",
    "\r\n",
    "가" * 129,
]
TRICKY_PATHS = [
    "/static/../../etc/passwd",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/style.css",
    "//",
    "/%00",
    "/%ff%fe",
    "/sessions/%00",
    "/sessions/1/turns/0",
    "/export/..%2fmanifest.json",
]
CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=b",
    "multipart/form-data",
    "text/plain",
    "application/json",
    "",
]
CHARSETS = [None, "utf-8", "UTF8", "utf-7", "punycode", "unicode_escape", "latin-1", "no-such-codec"]


@dataclass
class Aims:
    """Ids worth hitting: the fuzzer's own session and turn, and another annotator's."""

    own: int
    others: int
    responses: list[int]


@dataclass
class Case:
    signed_in: bool
    path: str
    body: bytes
    content_type: str


def values() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=60),
        st.sampled_from(TRICKY_VALUES),
        st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(0, 10_000)),
    )


def id_values(known: list[int]) -> st.SearchStrategy[object]:
    return st.one_of(st.sampled_from(known), st.integers(-(2**70), 2**70), st.text(max_size=20))


def path_for(template: str, aims: Aims) -> st.SearchStrategy[str]:
    if template == ANY_PATH[1]:
        return st.one_of(st.sampled_from(TRICKY_PATHS), st.text(max_size=40).map(lambda t: "/" + quote(t)))
    params = st.fixed_dictionaries(
        {
            "session_id": id_values([aims.own, aims.others]),
            "position": id_values([0, 1, 2]),
            "name": st.one_of(st.sampled_from(FILES), st.text(max_size=20)),
        }
    )
    return params.map(lambda p: fill(template, **{k: quote(str(v), safe="") for k, v in p.items()}))


def field_names(known: tuple[str, ...], aims: Aims) -> st.SearchStrategy[str]:
    real = [f"{name}{i}" for name in known for i in aims.responses] if "harm_" in known else list(known)
    return st.one_of(st.sampled_from([*real, "csrf_token"]), st.text(max_size=20))


def multipart(pairs: list[tuple[str, str]], charset: str | None) -> tuple[bytes, str]:
    """A multipart/form-data body (no files), quoting names the way browsers do."""
    parts = []
    for name, value in pairs:
        quoted = name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
        head = f'--b\r\nContent-Disposition: form-data; name="{quoted}"\r\n\r\n'
        parts.append(head.encode() + value.encode("utf-8") + b"\r\n")
    extra = f"; charset={charset}" if charset else ""
    return b"".join(parts) + b"--b--\r\n", f"multipart/form-data; boundary=b{extra}"


@st.composite
def cases(draw: st.DrawFn, template: str, known: tuple[str, ...], aims: Aims, token: str) -> Case:
    """``token`` stands for the client's own CSRF token, filled in when the case is sent."""
    signed = draw(st.booleans())
    path = draw(path_for(template, aims))
    csrf = draw(st.sampled_from([token, token, token, None]) | st.text(max_size=50))
    pairs = draw(st.lists(st.tuples(field_names(known, aims), values()), max_size=6))
    if csrf is not None:
        pairs.insert(draw(st.integers(0, len(pairs))), ("csrf_token", csrf))
    encoding = draw(st.sampled_from(["urlencoded", "urlencoded", "multipart", "raw"]))
    if encoding == "urlencoded":
        return Case(signed, path, urlencode(pairs).encode(), "application/x-www-form-urlencoded")
    if encoding == "multipart":
        return Case(signed, path, *multipart(pairs, draw(st.sampled_from(CHARSETS))))
    raw = draw(st.binary(max_size=2000))
    prefix = urlencode([("csrf_token", csrf)]).encode() + b"&" if csrf is not None else b""
    return Case(signed, path, prefix + raw, draw(st.sampled_from(CONTENT_TYPES)))


class Fuzzer:
    """Sends cases as the signed-in ``fuzz`` annotator or a signed-out visitor, checking each reply."""

    TOKEN = "\x01own-token\x01"

    def __init__(self, server: LiveServer):
        self.server = server
        self.signed_in = signed_in(server, "fuzz")
        self.anonymous = httpx.Client(base_url=server.url, timeout=60)
        self.anonymous.csrf = csrf_of(self.anonymous.get("/login").text)  # type: ignore[attr-defined]
        self.count: Counter[str] = Counter()

    def send(self, method: str, case: Case) -> httpx.Response:
        client = self.signed_in if case.signed_in else self.anonymous
        body = case.body.replace(quote(self.TOKEN).encode(), client.csrf.encode())
        body = body.replace(self.TOKEN.encode(), client.csrf.encode())
        if method == "GET":
            return client.get(case.path)
        headers = {"content-type": case.content_type} if case.content_type else {}
        return client.request(method, case.path, content=body, headers=headers)

    def check(self, method: str, case: Case) -> None:
        before = snapshot(self.server)
        reply = self.send(method, case)
        assert reply.status_code < 500, (reply.status_code, reply.text[-2000:])
        if method == "GET" or reply.status_code >= 400:
            assert snapshot(self.server) == before, f"{method} {case.path} answered {reply.status_code}"
        if self.signed_in.get("/").status_code != 200:  # a valid /logout: sign in again
            self.signed_in = signed_in(self.server, "fuzz")

    def run(self, method: str, template: str, aims: Aims) -> None:
        known = FIELDS.get((method, template), ())

        @seed(SEED)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases(template, known, aims, self.TOKEN))
        def route(case: Case) -> None:
            self.count[f"{method} {template}"] += 1
            for each in ("GET", "POST") if method == "ANY" else (method,):
                self.check(each, case)

        route()


@pytest.fixture
def aims(live_server: LiveServer) -> Aims:
    fuzz, bob = signed_in(live_server, "fuzz"), signed_in(live_server, "bob")
    own = new_session(fuzz)
    responses = attack_and_score(fuzz, own, "퍼저의 첫 질문", 2)
    return Aims(own, new_session(bob), responses)


def test_every_route_is_fuzzed(live_server: LiveServer) -> None:
    """The list of known form fields covers exactly the app's routes: a new route must be added here."""
    assert set(FIELDS) == set(api_routes(live_server.app))


def test_no_input_makes_a_5xx_and_refused_requests_write_nothing(
    live_server: LiveServer, aims: Aims, record_property: pytest.RecordProperty
) -> None:
    fuzzer = Fuzzer(live_server)
    for method, template in [*api_routes(live_server.app), ANY_PATH]:
        fuzzer.run(method, template, aims)
    total = sum(fuzzer.count.values())
    record_property("fuzz_cases", total)
    print(f"\nfuzz [{live_server.backend}]: {total} cases, seed {SEED}: {dict(fuzzer.count)}")
    assert all(n >= EXAMPLES // 2 for n in fuzzer.count.values()), fuzzer.count
