from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
import torch

from hcx.align.config import RmConfig
from hcx.align.preferences import PreferenceGroup, read_preferences
from hcx.align.reward_model import RewardStats, load_reward_model
from hcx.align.rm import collate_groups, train_reward_model
from hcx.tokenizer import load


def repeated_sentence_pairs(data_dir: Path, out: Path, n: int) -> Path:
    """Pairs whose rejected answer is the chosen answer with every sentence said twice (a learnable preference)."""
    rows = []
    with gzip.open(data_dir / "sft" / "ko.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            messages = json.loads(line)["messages"]
            answer = messages[-1]["content"]
            sentences = [s for s in re.split(r"(?<=[.?!])\s*", answer) if s]
            rejected = " ".join(f"{s} {s}" for s in sentences)
            rows.append({"prompt": messages[:-1], "chosen": answer, "rejected": rejected})
            if len(rows) == n:
                break
    out.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return out


def rm_config(base_model_dir: Path, source: Path, out: Path, **overrides) -> RmConfig:
    base = {
        "init": str(base_model_dir),
        "output_dir": str(out),
        "sources": [{"path": str(source), "language": "ko"}],
        "held_out": 60,
        "max_len": 256,
        "prompts_per_step": 16,
        "dtype": "float32",
        "log_every": 5,
        "optim": {"lr": 3e-3, "warmup_steps": 3, "weight_decay": 0.0},
        "checkpoint": {"every": 1000},
    }
    return RmConfig.model_validate({**base, **overrides})


def test_rm_learns_a_learnable_preference(base_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    source = repeated_sentence_pairs(data_dir, tmp_path / "pairs.jsonl", 420)
    result = train_reward_model(rm_config(base_model_dir, source, tmp_path / "rm"))
    assert result.step == 23  # one epoch: 360 training prompts / 16 per step
    assert result.metrics["held_out_accuracy"]["ko"] >= 0.9
    export = Path(result.metrics["export_dir"])
    stats = RewardStats.load(export)
    assert stats.std > 0 and stats.clip == 5.0

    rm, loaded_stats = load_reward_model(export)
    assert loaded_stats == stats
    rm.eval()
    groups = read_preferences(source, load(export), max_len=256, limit=4)
    tokens, lengths, _, _ = collate_groups(groups, load(export).pad_id)
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(export).eval()
    with torch.no_grad():
        ours = rm(tokens, lengths)
        theirs = hf(input_ids=tokens).logits.squeeze(-1)
    assert torch.allclose(ours, theirs, atol=1e-4)
    normalised = stats.normalize(ours)
    assert normalised.abs().max() <= stats.clip


def test_all_comparisons_of_a_prompt_share_the_step() -> None:
    groups = [
        PreferenceGroup([[1, 2, 3], [1, 2], [1]], [(0, 1), (0, 2), (1, 2)]),
        PreferenceGroup([[4], [5, 6]], [(1, 0)]),
    ]
    tokens, lengths, better, worse = collate_groups(groups, pad_id=0)
    assert tokens.tolist() == [[1, 2, 3], [1, 2, 0], [1, 0, 0], [4, 0, 0], [5, 6, 0]]
    assert lengths.tolist() == [3, 2, 1, 1, 2]
    assert list(zip(better, worse, strict=True)) == [(0, 1), (0, 2), (1, 2), (4, 3)]


def test_rm_defaults_follow_the_report() -> None:
    cfg = RmConfig()
    assert cfg.epochs == 1
    with pytest.raises(ValueError, match="tp must be 1"):
        RmConfig.model_validate({"parallel": {"tp": 2}})
