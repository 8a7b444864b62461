"""``evaluate``: score a checkpoint on a suite and get an :class:`EvalReport` (SPEC §6).

The pipeline (SPEC §5.4) calls this on every saved checkpoint; ``hcx eval`` calls it from
the command line.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hcx.eval.answers import compare_answers
from hcx.eval.backend import HcxLM
from hcx.eval.config import EvalConfig
from hcx.eval.local_data import default_data_dir
from hcx.eval.report import EvalReport, comparison_markdown, mlflow_metrics
from hcx.eval.runner import checkpoint_fingerprint, run_suite, weights_fingerprint
from hcx.eval.suites import load_suite
from hcx.model.load import ModelLoadError
from hcx.model.transformer import Transformer
from hcx.tokenizer import Tokenizer
from hcx.train.metrics import append_record


def evaluate(
    model: str | Path | Transformer,
    *,
    suite: str = "quick",
    tokenizer: Tokenizer | str | Path | None = None,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    output_dir: str | Path | None = None,
    batch_size: int = 64,
    log_mlflow: bool = False,
    hf: bool = False,
    strict: bool = False,
) -> EvalReport:
    """Evaluate an HF-format checkpoint directory or an in-memory model on ``suite``.

    ``data_dir`` defaults to the shared data when present (offline), else the hub. With
    ``output_dir`` the report files are written there and finished tasks are cached in
    ``output_dir/tasks`` (a re-run resumes). ``log_mlflow`` logs the scores and the report
    files to the active MLflow run. ``hf`` scores a checkpoint directory through lm-eval's
    ``hf`` backend (any Hugging Face model); ``strict`` fails on a benchmark missing from
    ``data_dir`` instead of skipping it.
    """
    spec = load_suite(suite)
    data_dir = data_dir if data_dir is not None else default_data_dir()
    if isinstance(model, Transformer):
        lm = HcxLM(model=model, tokenizer=tokenizer, batch_size=batch_size)
        model_id = f"in-memory:{weights_fingerprint(model)}"
    elif hf:
        lm = hf_lm(model, batch_size)
        model_id = f"hf:{checkpoint_fingerprint(model)}"
    else:
        lm = HcxLM(pretrained=str(model), tokenizer=tokenizer, batch_size=batch_size)
        model_id = checkpoint_fingerprint(model)
    report = run_suite(
        lm, spec, model_id=model_id, data_dir=data_dir, limit=limit, output_dir=output_dir, strict=strict
    )
    if output_dir is not None:
        report.write(output_dir)
    if log_mlflow:
        log_to_mlflow(report, output_dir)
    return report


def evaluate_recipe(cfg: EvalConfig) -> dict[str, EvalReport]:
    """Score every checkpoint of an ``eval:`` section; one radar (``output_dir/radar.png``) compares them.

    This is the eval stage's run function in :mod:`hcx.stages`, for ``hcx eval recipe`` and the pipeline.
    """
    from hcx.eval.radar import radar_chart

    out = Path(cfg.output_dir)
    reports = {
        name: evaluate(
            path,
            suite=cfg.suite,
            data_dir=cfg.data_dir,
            limit=cfg.limit,
            output_dir=out / name,
            batch_size=cfg.batch_size,
            log_mlflow=cfg.log_mlflow,
            hf=cfg.hf,
            strict=cfg.strict,
        )
        for name, path in cfg.checkpoints.items()
    }
    radar_chart(reports, out / "radar.png")
    (out / "comparison.md").write_text(comparison_markdown(reports), encoding="utf-8")
    if cfg.answers is not None:
        rates = compare_answers(cfg.checkpoints, cfg.answers, out)
        metrics = {f"answers/{name}/{k}": v for name, r in rates.items() for k, v in r.items()}
        append_record(out / "train_log.jsonl", {"step": 0, **metrics})  # into the stage's MLflow run
    return reports


def hf_lm(model: str | Path, batch_size: int):
    """lm-eval's ``hf`` backend on ``model`` (a directory or hub id), on the GPU when there is one."""
    import torch
    from lm_eval.models.huggingface import HFLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return HFLM(pretrained=str(model), device=device, batch_size=batch_size, dtype="auto")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"checkpoint {model} cannot be loaded by transformers: {exc}") from exc


def log_to_mlflow(report: EvalReport, output_dir: str | Path | None = None) -> None:
    """Scores as ``eval/...`` metrics and the report files as artifacts of the active run."""
    import mlflow

    mlflow.log_metrics(mlflow_metrics(report.scores, report.categories, report.overall))
    with tempfile.TemporaryDirectory() as tmp:
        paths = report.write(output_dir if output_dir is not None else tmp)
        for path in paths.values():
            mlflow.log_artifact(str(path), artifact_path=f"eval/{report.suite}")
