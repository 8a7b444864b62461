"""A live red-team server: real uvicorn on 127.0.0.1, a real SQLite file migrated from empty,
and the tiny pretrained model answering in-process through the hcx engine."""

from __future__ import annotations

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
from sqlalchemy.orm import sessionmaker

from hcx.redteam.app import create_app
from hcx.redteam.auth import add_user
from hcx.redteam.config import RedteamConfig
from hcx.redteam.db import open_database
from hcx.redteam.responders import EngineResponder

PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-22", "root": "root-pass-333"}


@dataclass
class LiveServer:
    url: str
    cfg: RedteamConfig
    sessions: sessionmaker
    db_url: str


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


@pytest.fixture(scope="session")
def live_server(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    db_url = f"sqlite:///{tmp_path_factory.mktemp('redteam') / 'redteam.db'}"
    cfg = small_config(db_url)
    sessions = open_database(db_url)
    with sessions() as db:
        add_user(db, "alice", PASSWORDS["alice"])
        add_user(db, "bob", PASSWORDS["bob"])
        add_user(db, "root", PASSWORDS["root"], admin=True)
    responder = EngineResponder("tiny", base_model_dir, cfg.sampling, cfg.engine)
    with serving(create_app(cfg, [responder], sessions)) as url:
        yield LiveServer(url, cfg, sessions, db_url)


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
