"""`hcx eval transfer` on a tiny run: two ratios, a few SFT steps, real shared SFT data."""

from __future__ import annotations

import gzip
import itertools
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from hcx.align.config import SftConfig
from hcx.align.conversations import tokenize_conversation
from hcx.align.sft import load_sft_data
from hcx.cli import app
from hcx.eval.rouge import rouge_l
from hcx.eval.transfer import TransferConfig, held_out_prompts, plot_transfer, ratio_label
from hcx.tokenizer import load
from tests.eval.test_judge import JudgeServer


def slice_sft(data_dir: Path, out: Path) -> list[dict]:
    """The first rows of the shared Korean and English SFT files (keeps the test fast)."""
    sources = []
    for language, n in (("ko", 200), ("en", 120)):
        with gzip.open(data_dir / "sft" / f"{language}.jsonl.gz", "rt", encoding="utf-8") as f:
            rows = list(itertools.islice(f, n))
        path = out / f"{language}.jsonl"
        path.write_text("".join(rows), encoding="utf-8")
        sources.append({"path": str(path), "language": language})
    return sources


def summary_lines(output: str) -> list[str]:
    """The command's result lines (progress bars on stderr may share a line with them)."""
    return re.findall(r"(?:1:0|0:1|plot): [^\r\n]*", output)


def sft_section(base: Path, sources: list[dict]) -> dict:
    return {
        "init": str(base),
        "sources": sources,
        "steps": 1,
        "held_out": 2,
        "max_len": 128,
        "max_tokens": 512,
        "dtype": "float32",
        "optim": {"lr": 1e-3, "warmup_steps": 1},
        "checkpoint": {"every": 1000},
        "log_every": 1,
    }


def test_held_out_prompts_are_exactly_the_samples_sft_kept_out(
    base_model_dir: Path, data_dir: Path, tmp_path: Path
):
    cfg = SftConfig.model_validate(sft_section(base_model_dir, slice_sft(data_dir, tmp_path)))
    tokenizer = load(base_model_dir)
    _, kept_out, _ = load_sft_data(cfg, tokenizer, 128)
    ours = held_out_prompts(cfg, tokenizer, 128)
    assert set(ours) == {"ko", "en"}
    for language, examples in kept_out.items():
        assert [tokenize_conversation(tokenizer, m, language).ids for m in ours[language]] == [
            e.ids for e in examples
        ]


@pytest.fixture
def judge_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[JudgeServer]:
    monkeypatch.setenv("HCX_JUDGE_API_KEY", "sk-judge-test")
    server = JudgeServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_transfer_cli_trains_scores_plots_and_resumes(
    base_model_dir: Path, data_dir: Path, tmp_path: Path, judge_server: JudgeServer
):
    recipe = tmp_path / "recipe.yaml"
    section = {
        "sft": sft_section(base_model_dir, slice_sft(data_dir, tmp_path)),
        "ratios": [1.0, 0.0],
        "output_dir": str(tmp_path / "transfer"),
        "eval_samples": 2,
        "max_new_tokens": 8,
        "judge": {"base_url": judge_server.url, "backoff_s": 0.01},
        "judge_data_dir": str(data_dir),
    }
    recipe.write_text(yaml.safe_dump({"transfer": section}), encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", "transfer", str(recipe)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "transfer" / "transfer.json").read_text())
    assert [r["label"] for r in summary["rows"]] == ["1:0", "0:1"]
    for row in summary["rows"]:
        for language in ("ko", "en"):
            path = tmp_path / "transfer" / f"ratio_{row['korean_ratio']:g}" / f"answers_{language}.jsonl"
            answers = [json.loads(line) for line in path.read_text().splitlines()]
            assert len(answers) == 2
            rouge = [rouge_l(a["answer"], [a["reference"]], language) for a in answers]
            assert row[f"rougeL_{language}"] == pytest.approx(100 * sum(rouge) / 2)
            assert row[f"judge_{language}"] == pytest.approx(80.0)  # the server rates single-v1 prompts 8
    assert judge_server.errors == 1  # its scripted first-call 500 was retried
    image = Image.open(tmp_path / "transfer" / "transfer.png")
    assert image.size[0] > 400 and len(image.convert("L").getcolors(maxcolors=1 << 16)) > 10
    assert "1:0: rougeL_en" in result.output

    again = CliRunner().invoke(app, ["eval", "transfer", str(recipe)])
    assert again.exit_code == 0
    assert "generating" not in again.output
    assert summary_lines(again.output) == summary_lines(result.output)


def test_bad_ratio_is_a_config_error():
    with pytest.raises(ValueError, match=r"transfer\.ratios"):
        TransferConfig.model_validate({"ratios": [1.5]})


def test_plot_keeps_near_ratios_apart(tmp_path: Path):
    rows = [
        {"korean_ratio": r, "label": ratio_label(r), "rougeL_ko": 40 * r, "rougeL_en": 40 * (1 - r)}
        for r in (1.0, 0.995, 0.5, 0.005, 0.0)
    ]
    assert [r["label"] for r in rows] == ["1:0", "0.995:0.005", "0.5:0.5", "0.005:0.995", "0:1"]
    path = plot_transfer(rows, tmp_path / "t.png")
    assert Image.open(path).size[0] > 400
