"""Fault injection on the files training writes and reads back: checkpoints, token shards, logs.

Every fault is made on real files (by real processes where it is a crash or a full disk), and
each test asserts what the user sees: an error naming the file, or a loud warning and a
correct resume.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hcx.model.load import ModelLoadError, load_model
from hcx.records import BadRecordError
from hcx.train.checkpoint import (
    Checkpointer,
    CheckpointError,
    CheckpointSaved,
    latest_checkpoint,
    read_events,
)
from hcx.train.config import PretrainConfig
from hcx.train.metrics import MetricsLog, read_jsonl_log, read_log, read_steps
from hcx.train.pretrain import Pretrainer
from hcx.train.shards import ShardError, open_shards, shards_are_current, tokenize_corpus

META = {"model": {"probe": "linear"}}


def tiny_model(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A small network with optimizer state, different for every seed."""
    torch.manual_seed(seed)
    model = nn.Linear(32, 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 32)).square().sum().backward()
    optimizer.step()
    return model, optimizer


def save_step(checkpointer: Checkpointer, model: nn.Module, optimizer, step: int) -> None:
    event = CheckpointSaved(path=f"step_{step:07d}", step=step, tokens_seen=step, time=0.0)
    checkpointer.save(model, optimizer, {"step": step}, event)


# --- 1. a checkpoint save that runs out of disk space ----------------------------------------

# Saves step 1, then caps the size of any file this process writes (as a full disk would) and
# saves step 2. SIGXFSZ is ignored, so an oversized write fails with OSError(EFBIG).
DISK_FULL_CHILD = """
import json, resource, signal, sys
import torch
from hcx.train.checkpoint import Checkpointer, CheckpointError
from tests.train.test_faults import META, save_step, tiny_model

out, weights = sys.argv[1], sys.argv[2]
model, optimizer = tiny_model(0)
checkpointer = Checkpointer(out, META)
save_step(checkpointer, model, optimizer, 1)
torch.save(model.state_dict(), weights)
model(torch.randn(4, 32)).sum().backward()
optimizer.step()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    save_step(checkpointer, model, optimizer, 2)
except CheckpointError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def test_save_on_full_disk_fails_clearly_and_keeps_the_previous_checkpoint(tmp_path, repo_root):
    out, weights = tmp_path / "run", tmp_path / "step1.pt"
    proc = subprocess.run(
        [sys.executable, "-c", DISK_FULL_CHILD, str(out), str(weights)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo_root,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-3000:]
    error = json.loads(proc.stdout.strip().splitlines()[-1])["error"]
    checkpoints = out / "checkpoints"
    assert f"checkpoint {checkpoints / 'step_0000002'} was not saved" in error
    assert "the file size limit was reached" in error and "File too large" in error
    assert f"the latest checkpoint is still {checkpoints / 'step_0000001'}" in error

    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_0000001"]
    assert latest_checkpoint(checkpoints) == checkpoints / "step_0000001"
    assert [e.step for e in read_events(out)] == [1]
    model, optimizer = tiny_model(seed=1)
    assert Checkpointer(out, META).load(model, optimizer, {"step": 0}) == {"step": 1}
    saved = torch.load(weights)
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)


# --- 2. a corrupted or truncated checkpoint ----------------------------------------------------


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def flip_bytes(path: Path) -> None:
    """Invert 4 bytes in the last quarter of the file (tensor data, where torch notices nothing)."""
    data = bytearray(path.read_bytes())
    at = len(data) * 3 // 4
    data[at : at + 4] = bytes(255 - b for b in data[at : at + 4])
    path.write_bytes(bytes(data))


def garbage(path: Path) -> None:
    path.write_bytes(b'{"model": {"probe": "lin\x00\xff garbage')


DAMAGE: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "truncated weights": ("__0_0.distcp", truncate, r"__0_0\.distcp: \d+ bytes, \d+ when saved \(truncated"),
    "flipped bytes": ("__0_0.distcp", flip_bytes, r"__0_0\.distcp: contents differ .*SHA-256 mismatch"),
    "deleted weights": ("__0_0.distcp", Path.unlink, r"__0_0\.distcp: missing"),
    "flipped DCP metadata": (".metadata", flip_bytes, r"\.metadata: contents differ"),
    "deleted DCP metadata": (".metadata", Path.unlink, r"not a complete checkpoint \(no \.metadata\)"),
    "garbage meta JSON": ("hcx_meta.json", garbage, r"hcx_meta\.json: corrupted, not valid JSON"),
    "deleted meta": ("hcx_meta.json", Path.unlink, r"hcx_meta\.json: missing"),
}


@pytest.fixture
def two_checkpoints(tmp_path) -> Path:
    """A run directory with valid checkpoints at steps 1 and 2 (``latest``: 2)."""
    checkpointer = Checkpointer(tmp_path, META)
    for step in (1, 2):
        save_step(checkpointer, *tiny_model(step), step)
    return tmp_path


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_checkpoint_is_refused_naming_the_file(two_checkpoints, damage):
    name, corrupt, message = DAMAGE[damage]
    newest = two_checkpoints / "checkpoints" / "step_0000002"
    corrupt(newest / name)
    model, optimizer = tiny_model(seed=9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=message) as caught:
        Checkpointer(two_checkpoints, META).load(model, optimizer, {"step": 0})
    assert str(newest) in str(caught.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing half-loaded


def test_latest_pointer_to_garbage_is_refused(two_checkpoints):
    pointer = two_checkpoints / "checkpoints" / "latest"
    pointer.write_bytes(b"\x00\xffstep_00")
    with pytest.raises(CheckpointError, match=r"latest names .* not a checkpoint directory"):
        Checkpointer(two_checkpoints, META).load(*tiny_model(0), {"step": 0})


# --- 3. a corrupted or truncated token shard ---------------------------------------------------


@pytest.fixture(scope="module")
def clean_shards(tmp_path_factory, corpus_glob, tokenizer_dir) -> Path:
    return tokenize_corpus(
        corpus_glob, tokenizer_dir, tmp_path_factory.mktemp("shards") / "t", max_documents=60
    )


@pytest.fixture
def shard_dir(clean_shards, tmp_path) -> Path:
    return Path(shutil.copytree(clean_shards, tmp_path / "tokens"))


def cut_mid_token(d: Path) -> None:
    path = d / "00000.tokens.bin"
    os.truncate(path, path.stat().st_size - 3)


def tokens_as_uint16(d: Path) -> None:
    path = d / "00000.tokens.bin"
    np.fromfile(path, dtype=np.uint32).astype(np.uint16).tofile(path)


def index_garbage_header(d: Path) -> None:
    path = d / "00000.index.npy"
    path.write_bytes(b"\x93NUMPY garbage" + path.read_bytes()[14:])


def index_as_float(d: Path) -> None:
    path = d / "00000.index.npy"
    np.save(path, np.load(path).astype(np.float64))


def index_out_of_order(d: Path) -> None:
    path = d / "00000.index.npy"
    index = np.load(path)
    index[5], index[6] = index[6], index[5] - 1
    np.save(path, index)


def manifest_garbage(d: Path) -> None:
    (d / "manifest.json").write_text('{"shards": [{"shard": "00000", "tok')


def manifest_without_counts(d: Path) -> None:
    manifest = json.loads((d / "manifest.json").read_text())
    del manifest["shards"][0]["tokens"]
    (d / "manifest.json").write_text(json.dumps(manifest))


SHARD_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "tokens cut mid-token": (
        cut_mid_token,
        r"00000\.tokens\.bin: truncated or corrupt: \d+ bytes, manifest says",
    ),
    "tokens of another dtype": (
        tokens_as_uint16,
        r"00000\.tokens\.bin: truncated or corrupt: .* uint32 tokens",
    ),
    "index garbage header": (index_garbage_header, r"00000\.index\.npy: unreadable document index"),
    "index of floats": (index_as_float, r"00000\.index\.npy: document index of dtype float64"),
    "index out of order": (index_out_of_order, r"00000\.index\.npy: document offsets decrease at document 5"),
    "manifest garbage": (manifest_garbage, r"manifest\.json: corrupted, not valid JSON"),
    "manifest without counts": (manifest_without_counts, r"manifest\.json: shards\[0\] is not a shard name"),
}


@pytest.mark.parametrize("damage", SHARD_DAMAGE, ids=list(SHARD_DAMAGE))
def test_damaged_shard_is_refused_naming_the_file(shard_dir, damage):
    corrupt, message = SHARD_DAMAGE[damage]
    corrupt(shard_dir)
    with pytest.raises(ShardError, match=message):
        open_shards(shard_dir)


def test_garbage_manifest_means_tokenize_again(shard_dir, corpus_glob, tokenizer_dir):
    manifest_garbage(shard_dir)
    assert not shards_are_current(shard_dir, corpus_glob, tokenizer_dir, 60)


# --- 4. a torn or corrupted train_log.jsonl ------------------------------------------------------


def write_log(path: Path, lines: list[str], tail: str = "") -> Path:
    path.write_text("".join(line + "\n" for line in lines) + tail)
    return path


def test_torn_last_line_is_skipped_with_a_warning(tmp_path, caplog):
    path = write_log(
        tmp_path / "train_log.jsonl", ['{"event": "start"}', '{"step": 1, "loss": 2.0}'], '{"step": 2, "lo'
    )
    with caplog.at_level(logging.WARNING):
        assert read_steps(path) == [{"step": 1, "loss": 2.0}]
    assert f"{path}:3: skipping a torn last line" in caplog.text


def test_garbage_in_the_middle_names_file_and_line(tmp_path):
    lines = ['{"event": "start"}', '{"step": 1, "loss": 2.0}', "\x00\x00garbage", '{"step": 2, "loss": 1.0}']
    path = write_log(tmp_path / "train_log.jsonl", lines)
    for read in (read_jsonl_log, read_log, read_steps):
        with pytest.raises(BadRecordError, match=rf"{path}:3: invalid JSON"):
            read(path)
    with pytest.raises(BadRecordError, match=rf"{path}:3: invalid JSON"):
        MetricsLog(tmp_path, total_steps=4, start_step=0)


def test_restarts_replace_the_steps_they_redo(tmp_path):
    lines = [
        {"event": "start"},
        *({"step": s, "loss": 10.0 - s} for s in (1, 2, 3, 4)),
        {"event": "resume", "step": 2},
        *({"step": s, "loss": 20.0 - s} for s in (3, 4, 5)),
    ]
    path = write_log(tmp_path / "train_log.jsonl", [json.dumps(r) for r in lines])
    assert [(r["step"], r["loss"]) for r in read_steps(path)] == [
        (1, 9.0),
        (2, 8.0),
        (3, 17.0),
        (4, 16.0),
        (5, 15.0),
    ]


# A real pretraining run killed (SIGKILL) halfway through writing step 5's log line; the last
# checkpoint is step 3's.
KILLED_MID_LOG_WRITE = """
import os, signal, sys
from hcx.train import metrics
from hcx.train.config import PretrainConfig
from hcx.train.pretrain import Pretrainer

append = metrics.append_record
def append_or_die(path, record):
    if record.get("step") == 5 and "event" not in record:
        with open(path, "a") as f:
            f.write('{"time": 1.0, "step": 5, "lo')
        os.kill(os.getpid(), signal.SIGKILL)
    append(path, record)
metrics.append_record = append_or_die
Pretrainer(PretrainConfig.model_validate_json(sys.argv[1])).train()
"""


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, corpus_glob, tokenizer_dir, repo_root) -> PretrainConfig:
    cfg = PretrainConfig.model_validate(
        {
            "corpus": corpus_glob,
            "tokenizer": str(tokenizer_dir),
            "output_dir": str(tmp_path_factory.mktemp("killed") / "run"),
            "max_documents": 200,
            "model": {"preset": "tiny", "vocab_size": 4096, "n_layers": 1, "max_seq_len": 64},
            "steps": 6,
            "stages": [{"fraction": 1.0, "seq_len": 32, "batch_size": 2, "rope_base": 10_000}],
            "optim": {"lr": 3e-3, "warmup_steps": 1},
            "checkpoint": {"every": 3},
            "dtype": "float32",
            "log_every": 1,
            "bpb": {"languages": []},
        }
    )
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_MID_LOG_WRITE, cfg.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=repo_root,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    return cfg


@pytest.fixture
def killed_copy(killed_run, tmp_path) -> PretrainConfig:
    """The killed run's directory copied, so each test damages its own."""
    shutil.copytree(killed_run.output_dir, tmp_path / "run")
    return killed_run.model_copy(update={"output_dir": str(tmp_path / "run")})


def test_resume_after_kill_mid_log_write_drops_the_torn_line_once(killed_copy, caplog):
    log_path = Path(killed_copy.output_dir) / "train_log.jsonl"
    assert log_path.read_text().endswith('"step": 5, "lo')
    with caplog.at_level(logging.WARNING):
        result = Pretrainer(killed_copy).train()
    assert result.step == 6
    assert f"{log_path}: removing a torn last line" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        records = read_log(log_path)
    assert not caplog.text  # the log is whole again
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    restarts = [(r["event"], r.get("step")) for r in records if r.get("event") in ("start", "resume")]
    assert restarts == [("start", None), ("resume", 3)]
    raw = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [r["step"] for r in raw if "loss" in r] == [1, 2, 3, 4, 4, 5, 6]  # append-only on disk


def test_resume_from_a_damaged_checkpoint_fails_naming_the_file(killed_copy):
    weights = Path(killed_copy.output_dir) / "checkpoints" / "step_0000003" / "__0_0.distcp"
    flip_bytes(weights)
    with pytest.raises(CheckpointError, match=rf"{weights}: contents differ"):
        Pretrainer(killed_copy).train()


def test_loading_a_damaged_checkpoint_for_evaluation_or_serving_names_the_file(killed_copy):
    """The one model loader (SFT init, evaluation workers, serving) checks the same hashes."""
    checkpoint = Path(killed_copy.output_dir) / "checkpoints" / "step_0000003"
    assert load_model(checkpoint).kind == "checkpoint"
    weights = checkpoint / "__0_0.distcp"
    truncate(weights)
    with pytest.raises(ModelLoadError, match=rf"{weights}: \d+ bytes"):
        load_model(checkpoint)


def test_resume_with_garbage_mid_log_fails_naming_the_line(killed_copy):
    log_path = Path(killed_copy.output_dir) / "train_log.jsonl"
    lines = log_path.read_text().split("\n")
    lines[2] = lines[2][: len(lines[2]) // 2]
    log_path.write_text("\n".join(lines))
    with pytest.raises(BadRecordError, match=rf"{log_path}:3: invalid JSON"):
        Pretrainer(killed_copy).train()
