"""lm-evaluation-harness's own ``local-completions`` model against ``hcx serve``: every
log-likelihood comes from the server's ``echo`` + ``logprobs`` answers, with no glue of ours in
between, and must equal what the in-process ``hcx`` backend computes on the same checkpoint."""

from __future__ import annotations

from pathlib import Path

import lm_eval
import pytest

from hcx.eval.backend import HcxLM
from hcx.eval.runner import task_manager
from tests.serve.live_server import API_KEY, SERVED_NAME, LiveServer

TASKS = ["hcx_kobest_copa", "hcx_xnli_ko"]


def _evaluate(model: str | HcxLM, model_args: dict | None, data_dir: Path) -> dict:
    return lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=TASKS,
        task_manager=task_manager(data_dir),
        limit=24,
        bootstrap_iters=0,
        log_samples=True,
    )


def test_local_completions_client_equals_the_hcx_backend(
    live_server: LiveServer, served_model_dir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    """COPA has multi-token choices after a context; XNLI-ko scores from an empty context
    (the prefix-token path). The server and the backend hold the same float64 model."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    client = _evaluate(
        "local-completions",
        {
            "model": SERVED_NAME,
            "base_url": f"{live_server.url}/v1/completions",
            "tokenizer": str(served_model_dir),
            "tokenized_requests": True,
            "num_concurrent": 2,
            "batch_size": 8,
            "max_retries": 1,
            "max_length": live_server.context_length,
        },
        data_dir,
    )
    backend = _evaluate(HcxLM(pretrained=str(served_model_dir), dtype="float64"), None, data_dir)
    for task in TASKS:
        assert client["results"][task]["acc,none"] == backend["results"][task]["acc,none"], task
        theirs = [r[0] for s in client["samples"][task] for r in s["filtered_resps"]]
        ours = [r[0] for s in backend["samples"][task] for r in s["filtered_resps"]]
        assert len(theirs) == len(ours) >= 48
        assert theirs == pytest.approx(ours, rel=1e-4), task
    live_server.wait_idle()
