"""The sandbox survives hostile programs and still passes real canonical solutions (issue 7)."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import textwrap
from pathlib import Path

import pytest

from hcx.eval.sandbox import SandboxConfig, isolation, run_program, run_programs
from hcx.eval.tasks.code.utils import humaneval_program, mbpp_program

FAST = SandboxConfig(timeout_s=3.0, cpu_s=2, memory_mb=512, max_processes=8)


def sandbox_processes() -> set[int]:
    """Live (not zombie) processes owned by the sandbox user, when there is one."""
    uid = isolation().uid
    if uid is None:
        return set()
    pids = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
                if entry.stat().st_uid == uid and state != "Z":
                    pids.add(int(entry.name))
            except OSError:
                pass
    return pids


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit]


def test_canonical_humaneval_and_mbpp_solutions_pass(data_dir: Path):
    humaneval = read_jsonl(data_dir / "eval" / "humaneval" / "test.jsonl", 25)
    mbpp = [r for r in read_jsonl(data_dir / "eval" / "mbpp" / "mbpp.jsonl") if r["split"] == "test"][:25]
    programs = [humaneval_program(d, d["canonical_solution"]) for d in humaneval]
    programs += [mbpp_program(d, d["code"]) for d in mbpp]
    results = run_programs(programs, progress=False)
    failures = [(i, r.stderr_tail) for i, r in enumerate(results) if not r.passed]
    assert not failures


def test_wrong_solutions_fail_with_their_traceback(data_dir: Path):
    doc = read_jsonl(data_dir / "eval" / "humaneval" / "test.jsonl", 1)[0]
    result = run_program(humaneval_program(doc, "    return not True\n"), FAST)
    assert result.status == "failed"
    assert "AssertionError" in result.stderr_tail


def test_infinite_loop_is_stopped_by_the_cpu_limit_and_the_wall_clock():
    cpu = run_program("while True:\n    pass\n", SandboxConfig(timeout_s=10, cpu_s=1))
    assert cpu.status == "timeout" and cpu.duration_s < 5
    wall = run_program("import time\ntime.sleep(60)\n", SandboxConfig(timeout_s=1.0, cpu_s=5))
    assert wall.status == "timeout" and wall.duration_s < 3


def test_fork_bomb_is_capped_and_every_process_is_killed():
    before = sandbox_processes()
    capped = run_program(
        textwrap.dedent(
            """
            import os, time
            forked = 0
            for _ in range(200):
                try:
                    if os.fork() == 0:
                        time.sleep(60)
                        os._exit(0)
                    forked += 1
                except OSError:
                    break
            print("forked", forked)
            """
        ),
        FAST,
    )
    assert capped.status == "passed", capped.stderr_tail
    assert int(capped.stdout_tail.split()[-1]) <= FAST.max_processes
    bomb = run_program(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        SandboxConfig(timeout_s=2.0, cpu_s=2, max_processes=8),
    )
    assert bomb.status == "timeout"
    left = sandbox_processes() - before
    assert not left


def test_memory_bomb_fails_without_hurting_the_parent():
    result = run_program("blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024 * 1024))\n", FAST)
    assert result.status == "failed"
    assert "MemoryError" in result.stderr_tail


def test_writes_outside_the_working_directory_are_refused(tmp_path: Path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    outside = tmp_path / "planted.txt"
    escape = Path(tempfile.gettempdir()) / "hcx-sandbox-escape"
    program = textwrap.dedent(
        f"""
        import os
        refused = 0
        for attempt in (lambda: open({str(outside)!r}, "w").write("x"),
                        lambda: os.remove({str(victim)!r}),
                        lambda: open({str(escape)!r}, "w").write("x")):
            try:
                attempt()
            except OSError:
                refused += 1
        with open("inside.txt", "w") as f:
            f.write("scratch files in the working directory are fine")
        print("refused", refused)
        """
    )
    result = run_program(program, FAST)
    assert result.status == "passed", result.stderr_tail
    assert result.stdout_tail.split() == ["refused", "3"]
    assert victim.read_text(encoding="utf-8") == "keep me"
    assert not outside.exists() and not escape.exists()


def test_large_files_hit_the_file_size_limit():
    result = run_program(
        "open('big', 'wb').write(b'x' * (64 * 1024 * 1024))\n", SandboxConfig(file_size_mb=1)
    )
    assert result.status == "failed"


def test_sockets_cannot_reach_a_server_on_this_machine():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        program = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'x')\n"
        result = run_program(program, FAST)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
    assert result.status == "failed"
    assert "sandbox: socket" in result.stderr_tail


def test_environment_secrets_are_not_visible(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HCX_JUDGE_API_KEY", "sk-top-secret-value")
    program = textwrap.dedent(
        f"""
        import os
        seen = repr(dict(os.environ))
        for pid in [p for p in os.listdir("/proc") if p.isdigit()] + [{os.getpid()}]:
            try:
                with open(f"/proc/{{pid}}/environ", "rb") as f:
                    seen += f.read().decode(errors="replace")
            except OSError:
                pass
        print("leaked" if "sk-top-secret" in seen else "clean", sorted(os.environ))
        """
    )
    result = run_program(program, FAST)
    assert result.status == "passed", result.stderr_tail
    assert result.stdout_tail.startswith("clean")
    assert "HCX_JUDGE_API_KEY" not in result.stdout_tail
