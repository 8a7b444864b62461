"""Run a suite through lm-eval, one task at a time, each result cached in the output directory.

Tasks come from ``hcx/eval/tasks`` (``include_path``) and, only if a suite names one of
lm-eval's own tasks, lm-eval's library. ``metadata={"data_dir": ...}`` reaches every task's
loader (:mod:`hcx.eval.local_data`). A finished task is written to
``<output_dir>/tasks/<task>.json`` with the settings it ran under, so a re-run with the same
model and settings reuses it instead of recomputing (issue 7 "nothing recomputed needlessly").
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import lm_eval
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager

from hcx.eval.local_data import MissingBenchmarkError
from hcx.eval.report import EvalReport
from hcx.eval.suites import Suite, SuiteTask

TASKS_DIR = Path(__file__).parent / "tasks"
#: lm-eval's standard errors: closed form for means (accuracy) whatever this is, resampled
#: this many times for chrF/BLEU (lm-eval caps those at 100); 0 would report none.
BOOTSTRAP_ITERS = 100
log = logging.getLogger(__name__)


class UnknownTaskError(KeyError):
    """A suite names a task that neither hcx nor lm-eval defines."""

    def __str__(self) -> str:
        return str(self.args[0])


def task_manager(data_dir: str | Path | None, names: list[str] | None = None) -> TaskManager:
    """hcx's tasks (plus lm-eval's own only when ``names`` needs them), reading items from ``data_dir``.

    Names with the ``hcx_`` prefix are ours, so an unknown one fails without indexing lm-eval's
    library (seconds); other names are looked up there.
    """
    metadata = {"data_dir": str(data_dir)} if data_dir is not None else {}
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata)
    ours = sorted(n for n in manager.all_tasks if n.startswith("hcx_"))
    missing = [n for n in names or [] if n not in manager.task_index]
    unknown = [n for n in missing if n.startswith("hcx_")]
    if missing and not unknown:
        manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=True, metadata=metadata)
        unknown = [n for n in missing if n not in manager.task_index]
    if unknown:
        raise UnknownTaskError(
            f"unknown task(s) {', '.join(unknown)}; hcx tasks: {', '.join(ours)} (or any lm-eval task)"
        )
    return manager


def weights_fingerprint(model: Any) -> str:
    """A digest of a model's weights, so cached results are only reused for the same weights."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def checkpoint_fingerprint(path: str | Path) -> str:
    """Path, size and modification time of a checkpoint's weight files."""
    path = Path(path).resolve()
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return f"{path}:{hashlib.sha1(repr(stamp).encode()).hexdigest()[:12]}"


def _run_task(lm: LM, entry: SuiteTask, manager: TaskManager, limit: int | None) -> dict[str, Any]:
    """One task's metrics, item count, shot counts and (on the hcx engine) prefix-cache hit rate."""
    before = getattr(lm, "prefix_cache_counts", None)
    result = lm_eval.simple_evaluate(
        model=lm,
        tasks=[entry.task],
        num_fewshot=entry.num_fewshot,
        limit=limit,
        task_manager=manager,
        bootstrap_iters=BOOTSTRAP_ITERS,
        log_samples=False,
        verbosity="WARNING",
    )
    assert result is not None
    n_samples = result.get("n-samples", {})
    samples = sum(int(v.get("effective", 0)) for v in n_samples.values())
    metrics = {
        k: v for k, v in result["results"][entry.task].items() if k not in ("alias", "name", "sample_len")
    }
    configs = {
        name: {"num_fewshot": cfg.get("num_fewshot")} for name, cfg in result.get("configs", {}).items()
    }
    hit_rate = None
    if before is not None:
        after = lm.prefix_cache_counts  # type: ignore[attr-defined]
        queried = after[1] - before[1]
        hit_rate = (after[0] - before[0]) / queried if queried else None
    return {"metrics": metrics, "samples": samples, "configs": configs, "prefix_cache_hit_rate": hit_rate}


def run_suite(
    lm: LM,
    suite: Suite,
    *,
    model_id: str,
    data_dir: str | Path | None,
    limit: int | None = None,
    output_dir: str | Path | None = None,
    strict: bool = False,
) -> EvalReport:
    """Evaluate ``lm`` on every task of ``suite`` and aggregate the report (cached per task).

    A task whose benchmark is missing from ``data_dir`` is listed in ``report.missing``
    and skipped, so a suite runs on whatever data exists; ``strict`` raises instead.
    """
    manager = task_manager(data_dir, [entry.task for entry in suite.tasks])
    cache = Path(output_dir) / "tasks" if output_dir is not None else None
    metrics, samples, missing, hit_rates = {}, {}, {}, {}
    for entry in suite.tasks:
        task_limit = min(x for x in (entry.limit, limit) if x is not None) if (entry.limit or limit) else None
        key = {
            "model": model_id,
            "task": entry.task,
            "num_fewshot": entry.num_fewshot,
            "limit": task_limit,
            "data_dir": str(data_dir) if data_dir is not None else None,
            "bootstrap_iters": BOOTSTRAP_ITERS,
        }
        path = cache / f"{entry.task}.json" if cache is not None else None
        done = json.loads(path.read_text()) if path is not None and path.is_file() else None
        if done is not None and done.get("key") == key:
            log.info("%s: reusing %s", entry.task, path)
        else:
            try:
                done = {"key": key, **_run_task(lm, entry, manager, task_limit)}
            except MissingBenchmarkError as exc:
                if strict:
                    raise
                log.warning("%s skipped: %s", entry.task, exc)
                missing[entry.task] = str(exc)
                continue
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(done, indent=2, ensure_ascii=False))
        metrics[entry.task], samples[entry.task] = done["metrics"], done["samples"]
        if done.get("prefix_cache_hit_rate") is not None:
            hit_rates[entry.task] = done["prefix_cache_hit_rate"]
    return EvalReport.build(
        metrics,
        {e.task: e.category for e in suite.tasks},
        {e.task: e.metric for e in suite.tasks},
        model=model_id,
        suite=suite.name,
        samples=samples,
        missing=missing,
        prefix_cache_hit_rates=hit_rates,
    )
