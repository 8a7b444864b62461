from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from hcx.train.checkpoint import CheckpointSaved, latest_checkpoint, read_events
from hcx.train.pretrain import Pretrainer

# Runs a real training process and SIGKILLs it from inside DCP's writer after the second
# checkpoint's tensor files are on disk but before its metadata is: a crash mid-save.
CRASHING_RUN = """
import os, signal, sys
from torch.distributed.checkpoint import filesystem
from hcx.train.config import PretrainConfig
from hcx.train.pretrain import Pretrainer

finish, saves = filesystem.FileSystemWriter.finish, []
def finish_or_die(self, *args, **kwargs):
    saves.append(1)
    if len(saves) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return finish(self, *args, **kwargs)
filesystem.FileSystemWriter.finish = finish_or_die
Pretrainer(PretrainConfig.model_validate_json(sys.argv[1])).train()
"""


def test_save_killed_midway_leaves_previous_checkpoint_loadable(make_config, tmp_path):
    cfg = make_config(output_dir=str(tmp_path / "crash"))
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_RUN, cfg.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]

    checkpoints = Path(cfg.output_dir) / "checkpoints"
    partial = checkpoints / "step_0000006.tmp"
    assert partial.is_dir() and any(partial.glob("*.distcp")) and not (partial / ".metadata").exists()
    assert latest_checkpoint(checkpoints) == checkpoints / "step_0000003"
    assert [e.step for e in read_events(cfg.output_dir)] == [3]

    resumed = Pretrainer(cfg).train()
    straight = Pretrainer(make_config(output_dir=str(tmp_path / "straight"))).train()
    assert resumed.losses == straight.losses
    assert latest_checkpoint(checkpoints) == checkpoints / "step_0000006" and not partial.exists()


def test_checkpoint_saved_record_round_trips(tmp_path):
    event = CheckpointSaved(
        path=str(tmp_path / "step_0000010"), step=10, tokens_seen=40960, time=1.5, seq_len=256
    )
    (tmp_path / "events.jsonl").write_text(event.to_json() + "\n")
    assert read_events(tmp_path) == [event]
    assert json.loads(event.to_json())["tokens_seen"] == 40960
