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


ESCAPE = """
import glob, json, os
try:
    found = {attempt}
except OSError as e:
    print(json.dumps(["denied", type(e).__name__]))
else:
    print(json.dumps(["absent"] if not found else ["leaked", repr(found)[:300]]))
"""

# name -> expression run inside the sandbox; REPO, DATA and PARENT are filled in by the test.
ESCAPES = {
    "etc_passwd": "open('/etc/passwd').read()",
    "repo_listing": "os.listdir(REPO)",
    "repo_glob": "glob.glob(REPO + '/*')",
    "repo_readme": "open(REPO + '/README.md').read()",
    "repo_parent_listing": "os.listdir(os.path.dirname(REPO))",
    "data_file": "open(DATA + '/eval/humaneval/test.jsonl').read(200)",
    "data_listing": "os.listdir(DATA)",
    "root_listing": "os.listdir('/root')",
    "home_listing": "os.listdir('/home')",
    "tmp_listing": "os.listdir('/tmp')",
    "parent_environ": "open(f'/proc/{PARENT}/environ', 'rb').read()",
    "other_processes": "[p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid())]",
    # every other visible process's environment beyond the scrubbed PATH, LANG and HOME
    "other_environ": "[e for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()"
    " for e in open(f'/proc/{p}/environ', 'rb').read().split(b'\\0')"
    " if e and e.split(b'=')[0] not in (b'PATH', b'LANG', b'HOME')]",
}


@pytest.mark.parametrize("name", ESCAPES)
def test_programs_cannot_read_the_machines_files(name: str, repo_root: Path, data_dir: Path):
    """The bubblewrap view shows only the system directories: none of these exist or open."""
    assert isolation().hides_files, isolation().describe
    assert (repo_root / "README.md").is_file() and (data_dir / "eval" / "humaneval" / "test.jsonl").is_file()
    attempt = (
        ESCAPES[name]
        .replace("REPO", repr(str(repo_root)))
        .replace("DATA", repr(str(data_dir)))
        .replace("PARENT", str(os.getpid()))
    )
    result = run_program(ESCAPE.format(attempt=attempt), FAST)
    assert result.status == "passed", result.stderr_tail
    outcome = json.loads(result.stdout_tail)
    assert outcome[0] in ("denied", "absent"), outcome
    readme = (repo_root / "README.md").read_text(encoding="utf-8").splitlines()[0]
    assert "root:x:0:0" not in result.stdout_tail and readme not in result.stdout_tail


def test_stdlib_programs_run_in_the_view():
    """Positive control: what HumanEval/MBPP tests import works, scratch files in the cwd too."""
    program = textwrap.dedent(
        """
        import collections, decimal, fractions, functools, hashlib, heapq, itertools, json, math
        import random, re, string, typing
        assert math.gcd(12, 18) == 6 and re.findall(r"\\d+", "a1b22") == ["1", "22"]
        assert collections.Counter("abca").most_common(1) == [("a", 2)]
        assert list(itertools.accumulate([1, 2, 3])) == [1, 3, 6]
        assert functools.reduce(lambda a, b: a * b, range(1, 6)) == 120
        assert heapq.nsmallest(2, [5, 1, 4]) == [1, 4] and string.ascii_lowercase[:3] == "abc"
        assert json.loads(json.dumps({"k": [1]})) == {"k": [1]}
        assert fractions.Fraction(1, 3) + fractions.Fraction(1, 6) == fractions.Fraction(1, 2)
        assert str(decimal.Decimal("0.1") + decimal.Decimal("0.2")) == "0.3"
        assert hashlib.sha256(b"hcx").hexdigest()[:4] and random.Random(0).random() < 1
        assert typing.get_type_hints(lambda: None) == {}
        with open("scratch.txt", "w") as f:
            f.write("ok")
        print(open("scratch.txt").read(), __import__("os").getcwd())
        """
    )
    result = run_program(program, FAST)
    assert result.status == "passed", result.stderr_tail
    assert result.stdout_tail.split() == ["ok", "/sandbox"]


def test_without_bubblewrap_the_sandbox_falls_back_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    missing = str(tmp_path / "no-bwrap")  # a fresh path: isolation() is cached per argument
    with caplog.at_level("WARNING", logger="hcx.eval.sandbox"):
        fallback = isolation(None, True, missing)
    assert not fallback.hides_files and "no filesystem view" in fallback.describe
    assert "programs can read every world-readable file" in caplog.text and "not found" in caplog.text
    result = run_program("import os\nprint(os.getcwd() != '/sandbox')\n", SandboxConfig(bwrap=missing))
    assert result.status == "passed" and result.stdout_tail.strip() == "True", result.stderr_tail
