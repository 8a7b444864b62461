from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from hcx.cli import app
from hcx.model.hf import import_hf
from hcx.train.checkpoint import CheckpointError, read_events
from hcx.train.metrics import LOG_NAME
from hcx.train.metrics import read_log as read_training_log
from hcx.train.parallel import MeshError
from hcx.train.pretrain import Pretrainer
from hcx.train.shards import ShardError


def read_log(output_dir: str | Path) -> list[dict]:
    return read_training_log(Path(output_dir) / LOG_NAME)


def test_cli_pretrains_with_fim_and_both_context_stages(tmp_path, corpus_glob, tokenizer_dir):
    """Loss falls on the shared Korean corpus; the context switches at the configured step; HF export."""
    recipe = tmp_path / "recipe.yaml"
    section = {
        "corpus": corpus_glob,
        "tokenizer": str(tokenizer_dir),
        "output_dir": str(tmp_path / "run"),
        "model": {"preset": "tiny", "vocab_size": None, "n_layers": 2, "max_seq_len": 256},
        "steps": 40,
        "stages": [
            {"fraction": 0.9, "seq_len": 64, "batch_size": 8, "rope_base": 10_000},
            {"fraction": 0.1, "seq_len": 256, "batch_size": 2, "rope_base": 100_000},
        ],
        "fim": {"rate": 0.5},
        "optim": {"lr": 1e-2, "warmup_steps": 5},
        "checkpoint": {"every": 20},
        "dtype": "float32",
        "log_every": 1,
        "export_hf": str(tmp_path / "hf"),
    }
    recipe.write_text(yaml.safe_dump({"pretrain": section}))
    result = CliRunner().invoke(app, ["pretrain", str(recipe), "--set", "pretrain.seed=1"])
    assert result.exit_code == 0, result.output
    assert "step 40" in result.output

    records = read_log(tmp_path / "run")
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 41))
    first, last = sum(r["loss"] for r in steps[:3]) / 3, sum(r["loss"] for r in steps[-3:]) / 3
    assert last < first - 1.5, (first, last)
    assert {r["seq_len"] for r in steps[:36]} == {64} and {r["seq_len"] for r in steps[36:]} == {256}
    switches = [(r["step"], r["seq_len"], r["rope_base"]) for r in records if r.get("event") == "context"]
    assert switches == [(0, 64, 10_000.0), (36, 256, 100_000.0)]
    assert all(r["grad_norm"] > 0 and r["tokens_per_s"] > 0 and r["lr"] > 0 for r in steps)
    assert steps[-1]["tokens_seen"] == 36 * 8 * 64 + 4 * 2 * 256

    events = read_events(tmp_path / "run")
    assert [(e.step, e.seq_len) for e in events] == [(20, 64), (40, 256)]
    assert all(Path(e.path).is_dir() for e in events)

    hf = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf["model_type"] == "llama" and hf["vocab_size"] == 4096
    assert import_hf(tmp_path / "hf").cfg.rope_base == 100_000.0


@pytest.mark.parametrize("async_save", [False, True])
def test_resume_is_exact(make_config, tmp_path, async_save):
    """N steps straight == N/2 steps, a fresh process state resumed from the checkpoint, N/2 more."""
    common = {"fim": {"split": "random", "rate": 0.5}, "checkpoint": {"every": 3, "async_save": async_save}}
    straight = Pretrainer(make_config(output_dir=str(tmp_path / "a"), **common)).train().losses

    cfg = make_config(output_dir=str(tmp_path / "b"), **common)
    seen = []
    first = Pretrainer(cfg, on_checkpoint=seen.append).train(max_steps=3)
    assert first.step == 3 and [e.step for e in seen] == [3]
    torch.manual_seed(1234)  # the resumed run must restore RNG state, not inherit this one
    resumed = Pretrainer(cfg).train()
    assert resumed.losses == straight
    assert resumed.tokens_seen == 3 * 4 * 64 + 3 * 2 * 128
    assert [e.step for e in read_events(tmp_path / "b")] == [3, 6]


def test_checkpoint_of_another_model_is_refused_before_any_step(make_config):
    Pretrainer(make_config(steps=3, checkpoint={"every": 3})).train()
    wider = Pretrainer(make_config(steps=6, model={"preset": "tiny", "vocab_size": 4096, "n_layers": 3}))
    with pytest.raises(CheckpointError, match=r"model\.n_layers: checkpoint 2, recipe 3"):
        wider.train()
    assert wider.step == 0


def test_bad_inputs_fail_before_training(make_config, tmp_path):
    with pytest.raises(MeshError, match="does not divide the world size 1"):
        Pretrainer(make_config(parallel={"tp": 2}))
    with pytest.raises(ValueError, match="vocab_size=1000 is smaller than the tokenizer"):
        Pretrainer(
            make_config(model={"preset": "tiny", "vocab_size": 1000, "n_layers": 2, "max_seq_len": 256})
        )

    cfg = make_config(steps=1)
    Pretrainer(cfg).train()
    shard = Path(cfg.output_dir) / "tokens" / "00000.tokens.bin"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ShardError, match=r"00000\.tokens\.bin: truncated"):
        Pretrainer(cfg)


def test_accumulation_and_activation_checkpointing_do_not_change_the_math(make_config, tmp_path):
    """grad_accum=2 averages the same loss over half-batches; activation checkpointing recomputes it."""
    base = Pretrainer(make_config(output_dir=str(tmp_path / "base"), steps=3)).train().losses
    accum = Pretrainer(make_config(output_dir=str(tmp_path / "accum"), steps=3, grad_accum=2)).train().losses
    recompute = (
        Pretrainer(make_config(output_dir=str(tmp_path / "ac"), steps=3, activation_checkpointing=True))
        .train()
        .losses
    )
    assert max(abs(a - b) for a, b in zip(base, accum, strict=True)) < 1e-5
    assert max(abs(a - b) for a, b in zip(base, recompute, strict=True)) < 1e-6


def test_bf16_wsd_run_trains_and_reports_mfu(make_config):
    cfg = make_config(
        steps=8, dtype="bfloat16", peak_tflops=1.0, optim={"lr": 1e-2, "warmup_steps": 2, "schedule": "wsd"}
    )
    result = Pretrainer(cfg).train()
    assert result.losses[-1] < result.losses[0] - 0.5
    records = [r for r in read_log(cfg.output_dir) if "loss" in r]
    assert all(0 < r["mfu"] < 1 for r in records)
    lrs = [r["lr"] for r in records]
    assert lrs[2] == lrs[3] == pytest.approx(1e-2) and lrs[-1] < lrs[3]


def test_cli_reports_bad_config_without_a_traceback(repo_root):
    recipe = repo_root / "recipes" / "tiny.yaml"
    result = CliRunner().invoke(app, ["pretrain", str(recipe), "--set", "pretrain.parallel.tp=2"])
    assert result.exit_code == 1
    assert "does not divide the world size 1" in result.output and "Traceback" not in result.output
