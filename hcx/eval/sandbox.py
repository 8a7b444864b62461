"""Run untrusted model-written programs (HumanEval, MBPP, K-HumanEval) in a hardened child process.

SPEC §6 scores code by executing the model's completion against the benchmark's tests
(pass@k). lm-eval's ``code_eval`` runs them in-process-ish with no limits, so hcx does its own
hardening, layer by layer:

* a fresh ``python -I`` (isolated mode: no user site, no ``PYTHON*`` variables) in its own
  session and process group, with a scrubbed environment (only a minimal ``PATH``);
* resource limits set before ``exec``: ``RLIMIT_CPU``, ``RLIMIT_AS`` (memory),
  ``RLIMIT_FSIZE`` (largest file), ``RLIMIT_NPROC`` (process count), no core dumps;
* a fresh temporary directory as the working directory, deleted afterwards;
* a private filesystem view where bubblewrap (``bwrap``) works (probed once, see
  :func:`isolation`): the program sees only the system directories (``/usr`` and the
  ``/bin``, ``/lib*`` links or directories) and the interpreter's own installation, read-only;
  its working directory as ``/sandbox``; a fresh ``/proc`` of its own PID namespace; a minimal
  ``/dev``; an empty ``/tmp`` capped at ``file_size_mb`` (root's, so ``nobody`` cannot write
  there). No ``/etc``, ``/home``, ``/root``, project checkout or data: they do not exist for it. The same ``bwrap`` puts it in new network, PID, IPC and
  UTS namespaces and sets ``no_new_privs``;
* otherwise OS isolation by ``unshare`` where the machine allows it: new network, PID and
  mount namespaces (no interface but a down loopback, a private ``/proc`` that shows none of
  the parent's processes or their environment), but every world-readable file stays readable
  (a warning is logged and :attr:`Isolation.describe` says so);
* either way, when started as root, the program runs as ``nobody`` so file permissions protect
  the system and ``RLIMIT_NPROC`` actually applies (the kernel exempts root from it);
* inside the child an audit hook (PEP 578) refuses sockets, ``ctypes`` and file writes
  outside the working directory — the only network barrier when no namespace is available;
* a wall-clock timeout that kills the whole process group; with a PID namespace killing
  its first process kills every descendant, even ones that called ``setsid``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field
from tqdm.auto import tqdm

from hcx.config import Section

log = logging.getLogger(__name__)
NOBODY = 65534
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"
SANDBOX_DIR = "/sandbox"  # the working directory as a program in the bubblewrap view sees it
Status = Literal["passed", "failed", "timeout"]
# A shell as the namespace's PID 1 under ``unshare``: the kernel never delivers SIGXCPU to a PID 1
# without a handler, and the shell turns the program's death by signal into exit status 128 + signal.
# (Under bubblewrap, bwrap's own init is PID 1 and reports 128 + signal itself.)
_REAPER = ("/bin/sh", "-c", '"$@"; exit $?', "sh")
_KILLED = {-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL}
# Read-only in the bubblewrap view, those that exist (merged-/usr links are recreated as links).
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# An interpreter installed under these is not used in the view: binding it would reveal them.
_PRIVATE_DIRS = ("/root", "/home")
# Importing extension modules proves that their shared libraries (libcrypto, libmpdec) are visible.
_PROBE_CODE = "import decimal, hashlib, json, math, random"

_GUARD = r"""
import os, sys
def _hcx_guard():
    root = os.path.realpath(os.getcwd())
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    path_events = {"os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.chmod", "os.chown",
                   "os.symlink", "os.link", "os.truncate", "os.utime", "shutil.rmtree"}
    def inside(path):
        if isinstance(path, int):
            return True
        path = os.fsdecode(path)
        return os.path.realpath(os.path.join(root, path)).startswith(root + os.sep)
    def hook(event, args):
        if event.startswith("socket.") or event.startswith("ctypes."):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            writes = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & write_flags)
            if writes and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing outside the working directory: {path!r}")
        elif event in path_events:
            targets = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
            if not all(inside(a) for a in targets):
                raise PermissionError(f"sandbox: {event} outside the working directory: {targets!r}")
    sys.addaudithook(hook)
_hcx_guard()
del _hcx_guard
with open("program.py", encoding="utf-8") as _f:
    _code = compile(_f.read(), "program.py", "exec")
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
"""


class SandboxConfig(Section):
    """Limits for one program. Defaults fit HumanEval/MBPP tests (milliseconds each) with headroom."""

    timeout_s: float = Field(10.0, gt=0, description="wall-clock limit; the process group is killed")
    cpu_s: int = Field(10, gt=0, description="RLIMIT_CPU seconds")
    memory_mb: int = Field(1024, gt=0, description="RLIMIT_AS, address space in MiB")
    file_size_mb: int = Field(
        16, gt=0, description="RLIMIT_FSIZE, largest file the program may write; also the size of its /tmp"
    )
    max_processes: int = Field(16, gt=0, description="RLIMIT_NPROC headroom above the sandbox user's count")
    workers: int = Field(max(1, os.cpu_count() or 1), gt=0, description="programs run concurrently")
    python: str | None = Field(
        None, description="interpreter; default: this one, else python3 on the system PATH"
    )
    isolate: bool = Field(
        True, description="use bubblewrap or unshare namespaces (and uid nobody as root) when possible"
    )
    bwrap: str | None = Field(
        "bwrap",
        description="bubblewrap executable (name on PATH or path) for the private filesystem view; "
        "None: no view, programs can read every world-readable file",
    )
    output_chars: int = Field(2000, gt=0, description="tail of stdout and stderr kept in the result")


@dataclass(frozen=True)
class SandboxResult:
    status: Status
    returncode: int | None
    stderr_tail: str
    stdout_tail: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Isolation:
    """How programs are started on this machine (``describe`` is logged and documented).

    ``view`` is the ``bwrap`` command line of the private filesystem view, empty when there is
    none; the working directory is added per run (:meth:`command`), then ``prefix`` follows.
    """

    prefix: tuple[str, ...]
    python: str
    uid: int | None
    describe: str
    view: tuple[str, ...] = ()

    @property
    def hides_files(self) -> bool:
        """Whether the program sees only the system directories, not the machine's files."""
        return bool(self.view)

    def workdir(self, run_dir: Path) -> str:
        """``run_dir`` as the program sees it."""
        return SANDBOX_DIR if self.view else str(run_dir)

    def command(self, run_dir: Path, tmp_bytes: int) -> list[str]:
        """Everything before the interpreter for a program working in ``run_dir``."""
        if not self.view:
            return list(self.prefix)
        run = ["--size", str(tmp_bytes), "--tmpfs", "/tmp", "--bind", str(run_dir), SANDBOX_DIR]
        return [*self.view, *run, "--chdir", SANDBOX_DIR, "--", *self.prefix]


def _run_python(argv: Sequence[str], code: str = "pass", cwd: str = "/") -> str | list[str]:
    """Run ``argv -I -c code`` in a scrubbed environment: its stdout lines, or why it did not run cleanly."""
    try:
        done = subprocess.run(
            [*argv, "-I", "-c", code],
            env={"PATH": MINIMAL_PATH, "LANG": "C.UTF-8"},
            cwd=cwd,
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        return f"exit status {done.returncode}: {lines[-1] if lines else 'no message'}"
    return done.stdout.decode(errors="replace").splitlines()


def _failure(argv: Sequence[str], code: str = "pass", cwd: str = "/") -> str | None:
    """Why ``argv -I -c code`` does not run cleanly, None when it does."""
    outcome = _run_python(argv, code, cwd)
    return outcome if isinstance(outcome, str) else None


def _works(argv: Sequence[str]) -> bool:
    return _failure(argv) is None


def isolation(python: str | None = None, isolate: bool = True, bwrap: str | None = "bwrap") -> Isolation:
    """Which isolation this machine permits (probed once per argument choice, then cached).

    A machine without a usable bubblewrap still runs programs, with a logged warning and a
    ``describe`` that says the filesystem is visible.
    """
    return _isolation(python, isolate, bwrap)


@functools.cache
def _isolation(python: str | None, isolate: bool, bwrap: str | None) -> Isolation:
    chosen = _probe(python, isolate, bwrap)
    log.info("code sandbox: %s (python %s)", chosen.describe, chosen.python)
    return chosen


def _candidates(python: str | None) -> list[str]:
    """Interpreters to try, best first: the configured one, else this one, its base, system python3."""
    found = (
        [python]
        if python
        else [
            sys.executable,
            getattr(sys, "_base_executable", ""),
            shutil.which("python3", path=MINIMAL_PATH),
        ]
    )
    candidates = [c for c in dict.fromkeys(found) if c and os.access(c, os.X_OK)]
    if not candidates:
        raise FileNotFoundError(f"sandbox: no usable python interpreter among {python or found!r}")
    return candidates


def _probe(python: str | None, isolate: bool, bwrap: str | None) -> Isolation:
    """Try the strongest isolation first: bubblewrap, then ``unshare``, then none."""
    candidates = _candidates(python)
    if not isolate:
        log.warning("code sandbox: isolation disabled by configuration")
        return _bare(candidates[0])
    viewed = _bwrap_isolation(bwrap, candidates)
    if isinstance(viewed, Isolation):
        return viewed
    log.warning(
        "code sandbox: no private filesystem view (%s): programs can read every world-readable file",
        viewed,
    )
    return _unshare_isolation(candidates) or _bare(candidates[0])


def _bare(python: str) -> Isolation:
    return Isolation((), python, None, "no namespaces: limits, scrubbed env, audit hook; no filesystem view")


def _unshare_isolation(candidates: Sequence[str]) -> Isolation | None:
    """``unshare --net --pid --mount-proc``: root directly and as uid ``nobody`` (the interpreter
    must be executable by ``nobody``, so a venv under ``/root`` falls back to the system python),
    other users inside a user namespace when the kernel allows it.
    """
    unshare = shutil.which("unshare", path=MINIMAL_PATH)
    if unshare is None:
        return None
    namespaces = ("--net", "--pid", "--fork", "--kill-child", "--mount-proc")
    if os.geteuid() == 0:
        prefix = (unshare, *namespaces, "--setuid", str(NOBODY), "--setgid", str(NOBODY), *_REAPER)
        uid, describe = NOBODY, "namespaces net+pid+mount, uid nobody; no filesystem view"
    else:
        prefix = (unshare, "--user", "--map-root-user", *namespaces, *_REAPER)
        uid, describe = None, "user namespace with net+pid+mount; no filesystem view"
    for interpreter in candidates:
        if _works([*prefix, interpreter]):
            return Isolation(prefix, interpreter, uid, describe)
    return None


def _bwrap_isolation(bwrap: str | None, candidates: Sequence[str]) -> Isolation | str:
    """The bubblewrap view with the first candidate that runs in it, else why there is none.

    Root: bwrap itself (no user namespace, which would map the program back to root and so
    exempt it from ``RLIMIT_NPROC``), then ``unshare --setuid`` drops to ``nobody`` inside.
    Other users: bwrap in a user namespace, with nested user namespaces disabled.
    """
    if not bwrap:
        return "bubblewrap disabled by configuration"
    path = shutil.which(bwrap, path=MINIMAL_PATH)
    if path is None:
        return f"{bwrap!r} not found (Debian package bubblewrap)"
    root = os.geteuid() == 0
    prefix: tuple[str, ...] = ()
    if root:
        if (unshare := shutil.which("unshare", path=MINIMAL_PATH)) is None:
            return "unshare (util-linux) is needed to drop to nobody"
        prefix = (unshare, "--setuid", str(NOBODY), "--setgid", str(NOBODY))
    describe = "bubblewrap: read-only system view, namespaces net+pid+ipc+uts" + (
        ", uid nobody" if root else " in a user namespace"
    )
    reasons = []
    for interpreter in dict.fromkeys(os.path.realpath(c) for c in candidates):
        installed = _installation(interpreter)
        if isinstance(installed, str):
            reasons.append(f"{interpreter}: {installed}")
            continue
        iso = Isolation(prefix, interpreter, NOBODY if root else None, describe, _view(path, installed))
        with tempfile.TemporaryDirectory(prefix="hcx-sandbox-probe-") as probe:
            failure = _failure([*iso.command(Path(probe), 1024 * 1024), interpreter], _PROBE_CODE, probe)
        if failure is None:
            return iso
        reasons.append(f"{interpreter}: {failure}")
    return "; ".join(reasons)


def _under(path: str, parents: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in parents)


def _installation(python: str) -> tuple[str, ...] | str:
    """The directories of ``python``'s installation the view lacks (a python outside ``/usr``,
    e.g. ``/opt/python``), or why it cannot be used there.
    """
    prefixes = _run_python([python], "import sys; print(sys.base_prefix); print(sys.base_exec_prefix)")
    if isinstance(prefixes, str):
        return prefixes
    dirs = {os.path.realpath(d) for d in [os.path.dirname(python), *prefixes]}
    extra = sorted(d for d in dirs if not _under(d, _SYSTEM_DIRS))
    package = str(Path(__file__).resolve())
    if exposed := [d for d in extra if d == "/" or _under(d, _PRIVATE_DIRS) or _under(package, [d])]:
        return f"installed in {exposed[0]}, which the view must not show"
    return tuple(extra)


def _view(bwrap: str, extra: Sequence[str]) -> tuple[str, ...]:
    """bwrap options for namespaces and a view of the system directories and ``extra``, read-only."""
    args = [bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    if os.geteuid() != 0:
        args += ["--unshare-user", "--disable-userns"]
    for directory in _SYSTEM_DIRS:
        if os.path.islink(directory):
            args += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            args += ["--ro-bind", directory, directory]
    for directory in extra:
        args += ["--ro-bind", directory, directory]
    return (*args, "--proc", "/proc", "--dev", "/dev")


def _process_count(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                count += entry.stat().st_uid == uid
    return count


def _limits(config: SandboxConfig, nproc: int) -> dict[int, tuple[int, int]]:
    mib = 1024 * 1024
    return {
        resource.RLIMIT_CPU: (config.cpu_s, config.cpu_s + 1),
        resource.RLIMIT_AS: (config.memory_mb * mib, config.memory_mb * mib),
        resource.RLIMIT_FSIZE: (config.file_size_mb * mib, config.file_size_mb * mib),
        resource.RLIMIT_NPROC: (nproc, nproc),
        resource.RLIMIT_CORE: (0, 0),
    }


def _prlimit_prefix(limits: dict[int, tuple[int, int]]) -> list[str] | None:
    """``prlimit`` sets the limits and execs, so no Python runs between fork and exec (thread-safe)."""
    prlimit = shutil.which("prlimit", path=MINIMAL_PATH)
    if prlimit is None:
        return None
    names = {
        resource.RLIMIT_CPU: "cpu",
        resource.RLIMIT_AS: "as",
        resource.RLIMIT_FSIZE: "fsize",
        resource.RLIMIT_NPROC: "nproc",
        resource.RLIMIT_CORE: "core",
    }
    return [prlimit, *(f"--{names[k]}={soft}:{hard}" for k, (soft, hard) in limits.items()), "--"]


def _set_limits(limits: dict[int, tuple[int, int]]) -> None:
    for kind, value in limits.items():
        resource.setrlimit(kind, value)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[1] == pid:
            children.append(int(entry.name))
    return children


def _kill(pid: int, grace_s: float = 5.0) -> None:
    """Kill the namespace's first process and wait until it is gone: the kernel kills every
    process of a PID namespace whose first process dies. Then kill the process group.

    ``unshare --kill-child`` is not enough: the kernel clears the parent-death signal when the
    child switches to ``nobody``.
    """
    firsts = _children(pid)
    for child in firsts:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any((st := _stat(c)) and st[0] != "Z" for c in firsts):
        time.sleep(0.01)


def _tail(path: Path, chars: int) -> str:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 4 * chars))
        return f.read().decode("utf-8", errors="replace")[-chars:]


def run_program(program: str, config: SandboxConfig | None = None) -> SandboxResult:
    """Execute ``program`` (complete Python source: solution + tests) and classify the outcome.

    ``passed`` means exit status 0; a CPU-limit kill or the wall timeout is ``timeout``;
    anything else (failed assert, exception, limit hit, refused operation) is ``failed``.
    """
    config = config or SandboxConfig()
    iso = isolation(config.python, config.isolate, config.bwrap)
    workdir = Path(tempfile.mkdtemp(prefix="hcx-sandbox-"))
    try:
        (workdir / "program.py").write_text(program, encoding="utf-8")
        run_dir = workdir / "run"
        run_dir.mkdir()
        shutil.move(workdir / "program.py", run_dir / "program.py")
        if iso.uid is not None:
            workdir.chmod(0o711)
            os.chown(run_dir, iso.uid, iso.uid)
        uid = iso.uid if iso.uid is not None else os.getuid()
        limits = _limits(config, _process_count(uid) + config.max_processes)
        prlimit = _prlimit_prefix(limits)
        argv = [
            *(prlimit or []),
            *iso.command(run_dir, limits[resource.RLIMIT_FSIZE][0]),
            iso.python,
            "-I",
            "-B",
            "-c",
            _GUARD,
        ]
        start = time.monotonic()
        timed_out = False
        with (workdir / "stdout").open("wb") as out, (workdir / "stderr").open("wb") as err:
            proc = subprocess.Popen(
                argv,
                cwd=run_dir,
                env={"PATH": MINIMAL_PATH, "LANG": "C.UTF-8", "HOME": iso.workdir(run_dir)},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=None if prlimit else functools.partial(_set_limits, limits),
            )
            try:
                proc.wait(timeout=config.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill(proc.pid)
                proc.wait()
        duration = time.monotonic() - start
        code = proc.returncode
        status: Status = "timeout" if timed_out or code in _KILLED else "passed" if code == 0 else "failed"
        return SandboxResult(
            status,
            None if timed_out else code,
            stderr_tail=_tail(workdir / "stderr", config.output_chars),
            stdout_tail=_tail(workdir / "stdout", config.output_chars),
            duration_s=duration,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_programs(
    programs: Sequence[str], config: SandboxConfig | None = None, *, progress: bool = True
) -> list[SandboxResult]:
    """Run many programs, ``config.workers`` at a time, results in input order."""
    config = config or SandboxConfig()
    if not programs:
        return []
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        results = pool.map(functools.partial(run_program, config=config), programs)
        return list(tqdm(results, total=len(programs), desc="sandbox", disable=not progress, leave=False))
