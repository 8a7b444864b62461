"""What hcx's code-execution hardening costs (issue 7, SPEC §6 code row).

Runs the canonical solutions of the shared HumanEval and MBPP items three ways, in one
process, with the same number of concurrent workers, and prints programs per second, how
many passed (must be equal: hardening may not change verdicts) and the ratios:

1. ours: :func:`hcx.eval.sandbox.run_programs` (fresh ``python -I`` under prlimit + unshare
   namespaces + uid nobody + audit hook, temporary directory, process-group kill);
2. plain subprocess: ``python -c program`` with a timeout and nothing else;
3. fork + exec: a forked ``multiprocessing`` child ``exec``-ing the program with a timeout,
   the way HF ``evaluate``'s ``code_eval`` (used by lm-eval's humaneval/mbpp) runs code
   (minus its ``reliability_guard``, which disables ``os``/``shutil`` functions in the child).

    .venv/bin/python benchmarks/sandbox.py [--limit 80] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from hcx.eval.sandbox import SandboxConfig, isolation, run_programs
from hcx.eval.tasks.code.utils import humaneval_program, mbpp_program
from hcx.paths import find_data_dir


def programs(limit: int) -> list[str]:
    data = find_data_dir(required=True)
    assert data is not None
    humaneval = [json.loads(x) for x in (data / "eval" / "humaneval" / "test.jsonl").open(encoding="utf-8")]
    mbpp = [json.loads(x) for x in (data / "eval" / "mbpp" / "mbpp.jsonl").open(encoding="utf-8")]
    mbpp = [r for r in mbpp if r["split"] == "test"]
    half = limit // 2
    return [humaneval_program(d, d["canonical_solution"]) for d in humaneval[:half]] + [
        mbpp_program(d, d["code"]) for d in mbpp[: limit - half]
    ]


def plain_subprocess(program: str, timeout: float) -> bool:
    try:
        return (
            subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=timeout).returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        return False


def _exec(program: str) -> None:
    exec(program, {"__name__": "__main__"})


def fork_exec_all(programs: Sequence[str], workers: int, timeout: float) -> list[bool]:
    """One forked child per program, ``workers`` at a time, forked from the main thread."""
    fork = mp.get_context("fork")
    results: list[bool] = [False] * len(programs)
    running: dict[int, tuple[mp.process.BaseProcess, float]] = {}
    queue = list(enumerate(programs))
    while queue or running:
        while queue and len(running) < workers:
            i, program = queue.pop(0)
            child = fork.Process(target=_exec, args=(program,))
            child.start()
            running[i] = (child, time.monotonic() + timeout)
        for i, (child, deadline) in list(running.items()):
            if child.exitcode is not None or time.monotonic() > deadline:
                if child.exitcode is None:
                    child.kill()
                child.join()
                results[i] = child.exitcode == 0
                del running[i]
        time.sleep(0.001)
    return results


def timed(run: Callable[[Sequence[str]], list[bool]], items: Sequence[str]) -> tuple[float, int]:
    start = time.perf_counter()
    passed = sum(run(items))
    return len(items) / (time.perf_counter() - start), passed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=80, help="programs (half HumanEval, half MBPP)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    items = programs(args.limit)
    config = SandboxConfig(workers=args.workers)
    print(f"isolation: {isolation().describe}; {len(items)} programs, {args.workers} workers")

    def pool(fn: Callable[[str, float], bool]) -> Callable[[Sequence[str]], list[bool]]:
        def run(batch: Sequence[str]) -> list[bool]:
            with ThreadPoolExecutor(args.workers) as ex:
                return list(ex.map(lambda p: fn(p, config.timeout_s), batch))

        return run

    runs = {
        "hcx sandbox": lambda batch: [r.passed for r in run_programs(batch, config, progress=False)],
        "plain subprocess": pool(plain_subprocess),
        "fork+exec (code_eval style)": lambda batch: fork_exec_all(batch, args.workers, config.timeout_s),
    }
    results = {name: timed(run, items) for name, run in runs.items()}
    ours = results["hcx sandbox"][0]
    print(f"{'runner':32} {'programs/s':>11} {'passed':>8} {'ours / it':>10}")
    for name, (rate, passed) in results.items():
        print(f"{name:32} {rate:11.1f} {passed:>5}/{len(items)} {ours / rate:10.2f}x")
    verdicts = {passed for _, passed in results.values()}
    print("verdicts equal:", len(verdicts) == 1)


if __name__ == "__main__":
    main()
