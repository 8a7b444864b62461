"""`hcx redteam user add`, `serve` and the recipe section, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import select
from typer.testing import CliRunner

from hcx.cli import app
from hcx.redteam.cli import load_config
from hcx.redteam.db import User, open_database
from tests.redteam.conftest import csrf_of
from tests.redteam.test_responders import closed_port


def test_recipe_section_and_options(repo_root: Path) -> None:
    cfg = load_config(repo_root / "recipes" / "tiny.yaml", None)
    assert cfg.db == "sqlite:///runs/tiny/redteam/redteam.db" and cfg.models == {
        "tiny-sft": "runs/tiny/sft/hf"
    }
    cfg = load_config(
        repo_root / "recipes" / "tiny.yaml", ["redteam.max_turns=2"], models={"a": "http://h/v1"}, port=9000
    )
    assert cfg.models == {"a": "http://h/v1"} and cfg.port == 9000 and cfg.max_turns == 2
    assert load_config(None, None).topics[:4] == [
        "social issues and bias",
        "illegal activity",
        "sexual matters",
        "professional advice",
    ]


def test_user_add_and_serve(base_model_dir: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'rt.db'}"
    runner = CliRunner(env={"COLUMNS": "250"})  # rich error panels: one message per line
    added = runner.invoke(
        app, ["redteam", "user", "add", "dana", "--db", db], env={"HCX_REDTEAM_PASSWORD": "dana-pass-1"}
    )
    assert added.exit_code == 0, added.output
    again = runner.invoke(
        app, ["redteam", "user", "add", "dana", "--db", db], env={"HCX_REDTEAM_PASSWORD": "dana-pass-2"}
    )
    assert again.exit_code == 2 and "already exists" in again.output
    admin = runner.invoke(
        app, ["redteam", "user", "add", "boss", "--admin", "--db", db], input="boss-pass-1\nboss-pass-1\n"
    )
    assert admin.exit_code == 0, admin.output
    with open_database(db)() as session:
        assert {(u.name, u.is_admin) for u in session.scalars(select(User))} == {
            ("dana", False),
            ("boss", True),
        }

    bad = runner.invoke(app, ["redteam", "serve", "--db", db, "--model", str(base_model_dir)])
    assert bad.exit_code == 2 and "expected NAME=CHECKPOINT_DIR" in bad.output

    port = closed_port()
    command = [sys.executable, "-m", "hcx.cli", "redteam", "serve", "--db", db, "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--model", f"tiny={base_model_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "hcx redteam serve did not start"
            try:
                login = httpx.get(f"{url}/login")
                break
            except httpx.ConnectError:
                time.sleep(0.2)
        with httpx.Client(base_url=url) as client:
            client.cookies = login.cookies
            reply = client.post(
                "/login", data={"name": "dana", "password": "dana-pass-1", "csrf_token": csrf_of(login.text)}
            )
            assert reply.status_code == 303
            assert "Your sessions" in client.get("/").text
    finally:
        server.terminate()
        server.wait(timeout=30)
