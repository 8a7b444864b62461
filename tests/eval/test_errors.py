"""Bad input: unknown suites and tasks, a data dir missing a benchmark, bad files, bad checkpoints."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from hcx.eval.backend import HcxLM
from hcx.eval.local_data import MissingBenchmarkError, load_benchmark
from hcx.eval.runner import UnknownTaskError, run_suite, task_manager
from hcx.eval.suites import UnknownSuiteError, load_suite
from hcx.eval.tasks.standard.utils import load_kobest
from hcx.model.load import ModelLoadError
from hcx.records import BadRecordError


def test_unknown_suite_lists_known_ones():
    with pytest.raises(UnknownSuiteError, match=r"unknown suite 'nope'.*quick"):
        load_suite("nope")


def test_suite_file_with_a_bad_category(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("tasks:\n  - {task: hcx_piqa, category: vibes}\n")
    with pytest.raises(ValueError, match=r"mine.yaml: invalid suite: tasks\.0\.category"):
        load_suite(path)


def test_unknown_task_is_named(data_dir):
    with pytest.raises(UnknownTaskError, match="hcx_no_such_task"):
        task_manager(data_dir, ["hcx_piqa", "hcx_no_such_task"])
    with pytest.raises(UnknownTaskError, match="hcx_mmlu_cooking"):
        task_manager(data_dir, ["hcx_mmlu_cooking"])


def _partial_data_dir(data_dir: Path, tmp_path: Path) -> Path:
    """A data dir with PIQA only."""
    (tmp_path / "eval").mkdir()
    shutil.copytree(data_dir / "eval" / "piqa", tmp_path / "eval" / "piqa")
    return tmp_path


def test_missing_benchmark_strict_and_skipped(data_dir, tmp_path, hcx_lm):
    partial = _partial_data_dir(data_dir, tmp_path)
    suite_path = tmp_path / "two.yaml"
    suite_path.write_text(
        "tasks:\n  - {task: hcx_piqa, limit: 3, category: commonsense}\n"
        "  - {task: hcx_click, limit: 3, category: factual}\n"
    )
    suite = load_suite(suite_path)
    with pytest.raises(MissingBenchmarkError, match=r"'click'.*lacks .*click/test.jsonl"):
        run_suite(hcx_lm, suite, model_id="m", data_dir=partial, strict=True)
    report = run_suite(hcx_lm, suite, model_id="m", data_dir=partial)
    assert list(report.scores) == ["hcx_piqa"] and "hcx_click" in report.missing
    assert "Not run" in report.markdown()


def test_bad_line_names_file_and_line(tmp_path):
    folder = tmp_path / "eval" / "piqa"
    folder.mkdir(parents=True)
    (folder / "valid.jsonl").write_text(
        '{"goal": "a", "sol1": "b", "sol2": "c", "label": 0}\n{"goal": oops}\n'
    )
    with pytest.raises(BadRecordError, match=r"valid.jsonl:2: invalid JSON"):
        load_benchmark("piqa", {"validation": "valid.jsonl"}, data_dir=tmp_path)


def test_checkpoint_that_cannot_load(tmp_path, base_model_dir):
    with pytest.raises(ModelLoadError, match="not a directory"):
        HcxLM(pretrained=str(tmp_path / "absent"))
    broken = tmp_path / "broken"
    shutil.copytree(base_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="broken cannot be loaded"):
        HcxLM(pretrained=str(broken))


def test_unmappable_item_names_file_and_line(tmp_path):
    folder = tmp_path / "eval" / "kobest" / "copa"
    folder.mkdir(parents=True)
    good = '{"ID": "1", "sentence": "s", "question": "결과", "1": "a", "2": "b", "Answer": "1"}'
    for split in ("dev", "test"):
        (folder / f"{split}.jsonl").write_text(good + "\n")
    with gzip.open(folder / "train.jsonl.gz", "wt") as f:
        f.write(good + "\n" + '{"ID": "2", "sentence": "s"}\n')
    with pytest.raises(BadRecordError, match=r"train.jsonl.gz:2: unexpected item: KeyError"):
        load_kobest("copa", data_dir=tmp_path)
