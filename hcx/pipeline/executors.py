"""Where stages and evaluation workers run: local subprocesses (default) or Ray tasks.

Both run the same thing, an ``hcx`` command line with some environment variables, and hand
back a :class:`Job` the driver polls. The local executor pins each job to its own CPU cores
(so an evaluation worker really runs on *other* compute than training, SPEC §5.4); Ray
places jobs by their resource requests on a cluster (or a local instance).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hcx.pipeline.config import Resources


class Job(Protocol):
    name: str

    def poll(self) -> int | None: ...

    def stop(self) -> None: ...


def hcx_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hcx.cli", *args]


def _thread_env(env: dict[str, str], cores: int) -> dict[str, str]:
    threads = str(max(1, cores))
    return {**env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


@dataclass
class LocalJob:
    name: str
    process: subprocess.Popen
    cores: list[int]

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        """SIGTERM the job's process group, then SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _confine(cores: list[int]) -> None:
    """In the child: run on ``cores`` only, and die with the driver (Linux) rather than linger."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class LocalExecutor:
    """Subprocesses on this machine, each pinned to the cores it was given."""

    def __init__(self) -> None:
        try:
            self.cores = sorted(os.sched_getaffinity(0))
        except AttributeError:
            self.cores = list(range(os.cpu_count() or 1))
        self.busy: dict[str, list[int]] = {}

    @property
    def total_cpus(self) -> int:
        return len(self.cores)

    def free(self) -> list[int]:
        held = {c for cores in self.busy.values() for c in cores}
        return [c for c in self.cores if c not in held]

    def can_start(self, resources: Resources) -> bool:
        free = len(self.free())
        return free >= max(1, resources.cpus) and resources.gpus == 0

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        resources: Resources,
        log_path: Path,
        last: bool = False,
    ) -> LocalJob:
        free = self.free()
        # Workers take cores from the end, stages from the start, so each keeps to its side.
        count = resources.cpus or len(free)
        cores = free[-count:] if last else free[:count]
        self.busy[name] = cores
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv,
                env=_thread_env(env, len(cores)),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: _confine(cores),
            )
        return LocalJob(name, process, cores)

    def release(self, job: LocalJob) -> None:
        self.busy.pop(job.name, None)

    def shutdown(self) -> None:
        pass


def _run_logged(argv: list[str], env: dict[str, str], log_path: str) -> int:
    """Body of a Ray task: run the command, appending its output to the log."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode


@dataclass
class RayJob:
    name: str
    ref: object

    def poll(self) -> int | None:
        import ray

        ready, _ = ray.wait([self.ref], timeout=0)
        if not ready:
            return None
        try:
            return int(ray.get(self.ref))
        except (
            ray.exceptions.TaskCancelledError,
            ray.exceptions.RayTaskError,
            ray.exceptions.WorkerCrashedError,
        ):
            return -1

    def stop(self) -> None:
        import ray

        ray.cancel(self.ref, force=True)


class RayExecutor:
    """Ray tasks with resource requests: a running cluster (``address``) or a local instance."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        import ray

        if not ray.is_initialized():
            kwargs = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
            ray.init(**kwargs, log_to_driver=False, configure_logging=False)
        self.ray = ray
        self.remote = ray.remote(_run_logged)

    @property
    def total_cpus(self) -> int:
        return int(self.ray.cluster_resources().get("CPU", 0))

    def can_start(self, resources: Resources) -> bool:
        return True  # Ray queues the task until its resources are free

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        resources: Resources,
        log_path: Path,
        last: bool = False,
    ) -> RayJob:
        cpus = resources.cpus or 1
        options: dict[str, object] = {"num_cpus": cpus, "num_gpus": resources.gpus, "name": name}
        if resources.memory_gb:
            options["memory"] = int(resources.memory_gb * 2**30)
        ref = self.remote.options(**options).remote(argv, _thread_env(env, cpus), str(log_path.resolve()))
        return RayJob(name, ref)

    def release(self, job: RayJob) -> None:
        pass

    def shutdown(self) -> None:
        self.ray.shutdown()
