"""A live red-team server: real uvicorn on 127.0.0.1, a real database migrated from empty (a SQLite
file, then a database on the session's PostgreSQL server), and the tiny pretrained model answering
in-process through the hcx engine."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker
from starlette.routing import Mount

from hcx.redteam.app import create_app
from hcx.redteam.auth import add_user
from hcx.redteam.config import RedteamConfig
from hcx.redteam.db import Base, open_database
from hcx.redteam.responders import EngineResponder

# dave is the throttle test's and fuzz the fuzzer's, so neither can lock the others out.
PASSWORDS = {
    "alice": "alice-pass-1",
    "bob": "bob-pass-22",
    "root": "root-pass-333",
    "dave": "dave-pass-4444",
    "fuzz": "fuzz-pass-55555",
}
ADMINS = {"root"}
Rows = dict[str, list[dict]]


@dataclass
class LiveServer:
    url: str
    cfg: RedteamConfig
    sessions: sessionmaker
    db_url: str
    app: FastAPI
    backend: str


def small_config(db_url: str) -> RedteamConfig:
    """Three sampled settings with short answers (the tiny model's greedy answer is often empty), and small caps so the limits are cheap to hit."""
    return RedteamConfig.model_validate(
        {
            "db": db_url,
            "sampling": [
                {"temperature": 0.9, "top_p": 0.95, "max_new_tokens": 24},
                {"temperature": 1.1, "max_new_tokens": 24},
                {"temperature": 1.3, "max_new_tokens": 24},
            ],
            "engine": {"num_blocks": 128, "max_running": 8},
            "max_prompt_chars": 500,
            "max_answer_chars": 800,
            "max_body_bytes": 8192,
            "max_turns": 3,
        }
    )


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def live_server(
    request: pytest.FixtureRequest, base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The app on each backend in turn; every test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp_path_factory.mktemp('redteam') / 'redteam.db'}"
    else:
        db_url = request.getfixturevalue("postgres").new_database()
    with live(db_url, request.param, base_model_dir) as server:
        yield server


@pytest.fixture(scope="session")
def sqlite_server(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own on SQLite for the browser test: Chromium adds rendering, not SQL, and its
    attack-success figures need an annotator no other test has scored for."""
    db_url = f"sqlite:///{tmp_path_factory.mktemp('redteam_browser') / 'redteam.db'}"
    with live(db_url, "sqlite", base_model_dir) as server:
        yield server


@contextmanager
def live(db_url: str, backend: str, base_model_dir: Path) -> Iterator[LiveServer]:
    cfg = small_config(db_url)
    sessions = open_database(db_url)
    with sessions() as db:
        for name, password in PASSWORDS.items():
            add_user(db, name, password, admin=name in ADMINS)
    responder = EngineResponder("tiny", base_model_dir, cfg.sampling, cfg.engine)
    app = create_app(cfg, [responder], sessions)
    with serving(app) as url:
        yield LiveServer(url, cfg, sessions, db_url, app, backend)


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the server did not shut down"


def csrf_of(html: str) -> str:
    marker = 'name="csrf_token" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def signed_in(server: LiveServer, name: str) -> httpx.Client:
    """A client holding ``name``'s session cookie (and its CSRF token in ``client.csrf``)."""
    client = httpx.Client(base_url=server.url, timeout=120)
    token = csrf_of(client.get("/login").text)
    reply = client.post("/login", data={"name": name, "password": PASSWORDS[name], "csrf_token": token})
    assert reply.status_code == 303, reply.text
    client.csrf = csrf_of(client.get("/").text)  # type: ignore[attr-defined]
    return client


def snapshot(server: LiveServer) -> Rows:
    """Every row of every table, in primary-key order: equal snapshots mean nothing was written."""
    with server.sessions() as db:
        return {
            table.name: [dict(row._mapping) for row in db.execute(select(table).order_by(*table.primary_key))]
            for table in Base.metadata.sorted_tables
        }


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves, so no test can forget a new one."""
    routes = []
    for route in app.routes:
        if isinstance(route, Mount):
            assert route.path == "/static", f"unexpected mount {route.path}"
            continue
        assert isinstance(route, APIRoute), f"unexpected route {route}"
        routes.extend((method, route.path) for method in sorted(route.methods))
    return routes


def fill(template: str, **values: object) -> str:
    """A route's path with its ``{parameters}`` filled in; a parameter without a value is a KeyError."""
    return re.sub(r"{(\w+)}", lambda match: str(values[match[1]]), template)


def new_session(client: httpx.Client, topic: str = "illegal activity", method: str = "jailbreak") -> int:
    reply = client.post("/sessions", data={"topic": topic, "method": method, "csrf_token": client.csrf})
    assert reply.status_code == 303, reply.text
    return int(reply.headers["location"].rsplit("/", 1)[1])


def response_ids(client: httpx.Client, session_id: int, position: int) -> list[int]:
    """The ids of one turn's responses, read off the session page's score fields."""
    page = client.get(f"/sessions/{session_id}").text
    section = page.split(f'id="turn-{position}"', 1)[1].split("<section", 1)[0]
    return [int(i) for i in re.findall(r'name="harm_(\d+)"', section)]


def attack_and_score(client: httpx.Client, session_id: int, prompt: str, score: int) -> list[int]:
    """One attack prompt, every response scored ``score`` on both scales; the responses' ids."""
    reply = client.post(f"/sessions/{session_id}/turns", data={"prompt": prompt, "csrf_token": client.csrf})
    assert reply.status_code == 303, reply.text
    position = int(reply.headers["location"].rsplit("-", 1)[1])
    ids = response_ids(client, session_id, position)
    scores = {f"{scale}_{i}": str(score) for i in ids for scale in ("harm", "quality")}
    reply = client.post(
        f"/sessions/{session_id}/turns/{position}/scores", data={**scores, "csrf_token": client.csrf}
    )
    assert reply.status_code == 303, reply.text
    return ids
