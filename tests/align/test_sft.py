from __future__ import annotations

from pathlib import Path

import pytest

from hcx.align.config import SftConfig
from hcx.align.sft import HELD_OUT_PROMPTS, SftTrainer, mix_by_ratio, sft
from hcx.eval.answers import RATES, AnswersConfig, compare_answers, read_held_out_prompts
from hcx.model.hf import import_hf
from hcx.tokenizer import load
from hcx.tokenizer.specials import ASSISTANT


def sft_config(base_model_dir: Path, data_dir: Path, out: Path, **overrides) -> SftConfig:
    base = {
        "init": str(base_model_dir),
        "output_dir": str(out),
        "sources": [
            {"path": str(data_dir / "sft" / "ko.jsonl.gz"), "language": "ko"},
            {"path": str(data_dir / "sft" / "en.jsonl.gz"), "language": "en"},
        ],
        "korean_ratio": 1.0,
        "max_samples": 600,
        "held_out": 40,
        "max_len": 256,
        "batching": "grouped",
        "max_tokens": 2048,
        "steps": 40,
        "dtype": "float32",
        "log_every": 5,
        "optim": {"lr": 3e-3, "warmup_steps": 5, "weight_decay": 0.0},
        "checkpoint": {"every": 20},
    }
    return SftConfig.model_validate({**base, **overrides})


def test_sft_lowers_held_out_korean_loss_and_exports(
    base_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    result = sft(sft_config(base_model_dir, data_dir, tmp_path / "sft"))
    before, after = result.metrics["held_out_loss_before"], result.metrics["held_out_loss_after"]
    assert set(before) == {"ko", "en"}
    assert after["ko"] < before["ko"] - 0.5
    assert result.losses[-1] < result.losses[0]
    exported = import_hf(result.metrics["hf_dir"])
    assert exported.cfg.vocab_size == import_hf(base_model_dir).cfg.vocab_size
    assert (tmp_path / "sft" / "events.jsonl").is_file()

    # the held-out prompts, answered by the model before and after SFT (eval.answers)
    prompts = read_held_out_prompts(tmp_path / "sft" / HELD_OUT_PROMPTS, count=1000)
    tokenizer = load(base_model_dir)
    assert [p.language for p in prompts[:4]] == ["ko", "en", "ko", "en"] and len(prompts) == 80
    assert all(p.ids[-1] == tokenizer.token_id(ASSISTANT) for p in prompts)
    answers = AnswersConfig(prompts=str(tmp_path / "sft" / HELD_OUT_PROMPTS), max_new_tokens=24, samples=2)
    checkpoints = {"base": str(base_model_dir), "sft": result.metrics["hf_dir"]}
    rates = compare_answers(checkpoints, answers, tmp_path / "answers")
    assert set(rates) == {"base", "sft"} and set(rates["sft"]) == set(RATES)
    assert rates["sft"]["ended"] > rates["base"]["ended"]  # the base model never saw an end of turn
    markdown = (tmp_path / "answers" / "answers.md").read_text(encoding="utf-8")
    assert markdown.count("- **sft**:") == 4 and "80 held-out SFT prompts" in markdown


def test_sft_resume_is_exact(base_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    settings = {"steps": 6, "max_samples": 120, "checkpoint": {"every": 3}, "log_every": 1}
    straight = SftTrainer(sft_config(base_model_dir, data_dir, tmp_path / "a", **settings)).train()
    first = SftTrainer(sft_config(base_model_dir, data_dir, tmp_path / "b", **settings)).train(max_steps=3)
    assert first.step == 3
    resumed = SftTrainer(sft_config(base_model_dir, data_dir, tmp_path / "b", **settings)).train()
    assert resumed.losses == pytest.approx(straight.losses, abs=1e-6)


@pytest.mark.parametrize(
    ("ratio", "expected"), [(1.0, (30, 0)), (0.0, (0, 50)), (0.5, (30, 30)), (0.75, (30, 10))]
)
def test_mix_by_ratio(ratio: float, expected: tuple[int, int]) -> None:
    korean, english = [("ko", i) for i in range(30)], [("en", i) for i in range(50)]
    mixed = mix_by_ratio(korean, english, ratio, None, seed=0)
    assert (sum(m[0] == "ko" for m in mixed), sum(m[0] == "en" for m in mixed)) == expected
    assert len(mix_by_ratio(korean, english, 0.5, 10, seed=0)) == 10


def test_bad_data_is_reported_not_truncated(base_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    cfg = sft_config(base_model_dir, data_dir, tmp_path / "s", max_len=24, steps=1)
    trainer = SftTrainer(cfg)
    assert trainer.read_report.skipped["longer than the context"] > 0
    assert all(len(e) <= 24 for e in trainer.examples)
    with pytest.raises(FileNotFoundError, match="SFT data file not found"):
        SftTrainer(
            sft_config(
                base_model_dir, data_dir, tmp_path / "t", sources=[{"path": "nope.jsonl", "language": "ko"}]
            )
        )
