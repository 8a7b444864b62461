"""The hcx backend against lm-eval's hf backend on the same HF export (issue 7 tests)."""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import pytest
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from hcx.eval.backend import HcxLM
from hcx.eval.runner import task_manager

MULTIPLE_CHOICE = ["hcx_kmmlu_criminal_law", "hcx_piqa", "hcx_xnli_ko", "hcx_kobest_copa"]


@pytest.fixture(scope="module")
def hf_lm(base_model_dir: Path, hcx_lm: HcxLM) -> HFLM:
    """lm-eval's own backend on the same export, with the same window as ours."""
    return HFLM(pretrained=str(base_model_dir), device="cpu", batch_size=16, max_length=hcx_lm.max_length)


def _evaluate(model, data_dir: Path, tasks: list[str], limit: int, model_args: dict | None = None) -> dict:
    return lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=tasks,
        task_manager=task_manager(data_dir),
        limit=limit,
        bootstrap_iters=0,
        log_samples=True,
    )


def test_registered_backend_matches_hf_on_multiple_choice(base_model_dir, hf_lm, data_dir):
    """Same accuracies, and the same log-likelihood for every choice, as lm-eval's hf backend.

    KMMLU 5-shot overflows the 512-token model, so the left-truncated window is compared too;
    XNLI has an empty context (the prefix-token path); PIQA and COPA have multi-token choices.
    """
    ours = _evaluate(
        "hcx", data_dir, MULTIPLE_CHOICE, 20, {"pretrained": str(base_model_dir), "dtype": "float32"}
    )
    theirs = _evaluate(hf_lm, data_dir, MULTIPLE_CHOICE, 20)
    for task in MULTIPLE_CHOICE:
        assert ours["results"][task]["acc,none"] == theirs["results"][task]["acc,none"], task
        ours_ll = [r[0] for s in ours["samples"][task] for r in s["filtered_resps"]]
        theirs_ll = [r[0] for s in theirs["samples"][task] for r in s["filtered_resps"]]
        assert len(ours_ll) == len(theirs_ll) >= 40
        # float32 sums of hundreds of log-probs whose kernels (and so rounding) differ by CPU:
        # agree to 1e-5 of their size, or 1e-4 for the short ones near zero
        assert ours_ll == pytest.approx(theirs_ll, rel=1e-5, abs=1e-4), task
    contexts = [s["arguments"][0][0] for s in ours["samples"]["hcx_kmmlu_criminal_law"]]
    assert any(len(hf_lm.tok_encode(c)) > hf_lm.max_length for c in contexts), "truncation not exercised"


def test_greedy_generation_matches_hf(hcx_lm, hf_lm):
    """generate_until: the same greedy text, cut at the same stop strings."""
    requests = [
        Instance("generate_until", {}, (prompt, {"until": ["\n", "."], "max_gen_toks": 24}), idx)
        for idx, prompt in enumerate(
            ["Q: what is the capital of France?\nA:", "대한민국의 수도는", "The cat sat on"]
        )
    ]
    ours = hcx_lm.generate_until(requests, disable_tqdm=True)
    theirs = hf_lm.generate_until(requests, disable_tqdm=True)
    assert ours == theirs
    assert all("\n" not in text and "." not in text for text in ours)


def test_rolling_loglikelihood_matches_hf(hcx_lm, hf_lm, data_dir):
    """Perplexity windows (a text longer than the model's window) sum to the same log-likelihood."""
    text = "\n".join(json.loads(line)["Text"] for line in (data_dir / "eval/kobest/boolq/test.jsonl").open())
    text = text[:3000]
    assert len(hcx_lm.tok_encode(text)) > 2 * hcx_lm.max_length
    requests = [
        Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate([text, "짧은 문장입니다."])
    ]
    ours = hcx_lm.loglikelihood_rolling(requests, disable_tqdm=True)
    theirs = hf_lm.loglikelihood_rolling(requests, disable_tqdm=True)
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert all(x < 0 for x in ours)
