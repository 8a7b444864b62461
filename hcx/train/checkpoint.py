"""Training checkpoints with torch.distributed.checkpoint (SPEC §4, §5.4).

Every rank writes its shards of the model and optimizer, plus the scheduler, step, data
position and RNG state, into ``step_NNNNNNN.tmp``; only when all ranks are done does rank 0
rename it to ``step_NNNNNNN`` and then replace the ``latest`` pointer (both atomic renames).
A process killed during a save therefore leaves a stray ``.tmp`` directory and the previous
checkpoint still named by ``latest``. After the rename a :class:`CheckpointSaved` record is
appended to ``events.jsonl`` and handed to the ``on_saved`` callback on rank 0: that is how the
alignment pipeline, which passes its publish step as the callback, learns of checkpoints to
evaluate asynchronously (SPEC §5.4). Training itself knows nothing of the pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from hcx.model.load import LATEST, META, run_dcp

EVENTS = "events.jsonl"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed into this run; the message says why."""


@dataclass(frozen=True)
class CheckpointSaved:
    """A complete, loadable checkpoint (the pipeline's trigger for evaluation, SPEC §5.4)."""

    path: str
    step: int
    tokens_seen: int
    time: float
    stage: str = "pretrain"
    seq_len: int | None = None
    loss: float | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)


def read_events(output_dir: str | Path) -> list[CheckpointSaved]:
    path = Path(output_dir) / EVENTS
    if not path.is_file():
        return []
    return [CheckpointSaved(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def latest_checkpoint(directory: str | Path) -> Path | None:
    pointer = Path(directory) / LATEST
    if not pointer.is_file():
        return None
    path = Path(directory) / pointer.read_text().strip()
    if not (path / ".metadata").is_file():
        raise CheckpointError(f"{pointer} names {path}, which is not a complete checkpoint")
    return path


def _model_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's model config with the defaults of fields added since it was written."""
    from hcx.model.config import ModelConfig

    try:
        full = ModelConfig.model_validate(fields).model_dump(mode="json")
    except ValueError:
        return dict(fields)
    return {k: v for k, v in full.items() if k in fields or k not in ("preset", "init_std")}


class Checkpointer:
    """Saves and restores one training run's state under ``<output_dir>/checkpoints``."""

    def __init__(
        self,
        output_dir: str | Path,
        meta: dict[str, Any],
        keep: int = 2,
        async_save: bool = False,
        on_saved: Callable[[CheckpointSaved], None] | None = None,
    ):
        self.output_dir = Path(output_dir)
        self.directory = self.output_dir / "checkpoints"
        self.meta, self.keep, self.async_save, self.on_saved = meta, keep, async_save, on_saved
        self._pending: tuple[Any, Path, Path, CheckpointSaved] | None = None

    def _state(self, model, optimizer) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        return {"model": model_sd, "optim": optim_sd}

    def save(self, model, optimizer, train_state: dict[str, Any], event: CheckpointSaved) -> None:
        self.wait()
        final = self.directory / Path(event.path).name
        tmp = final.with_name(final.name + ".tmp")
        if is_rank0():
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        state = {**self._state(model, optimizer), "train": train_state}
        if self.async_save:
            future = run_dcp(dcp.async_save, state, checkpoint_id=str(tmp))
            self._pending = (future, tmp, final, event)
        else:
            run_dcp(dcp.save, state, checkpoint_id=str(tmp))
            self._finalize(tmp, final, event)

    def wait(self) -> None:
        """Finish an asynchronous save in flight (before the next save and at the end of training)."""
        if self._pending is not None:
            future, tmp, final, event = self._pending
            self._pending = None
            future.result()
            self._finalize(tmp, final, event)

    def _finalize(self, tmp: Path, final: Path, event: CheckpointSaved) -> None:
        _barrier()
        if is_rank0():
            (tmp / META).write_text(json.dumps(self.meta, indent=1, sort_keys=True))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            pointer_tmp = self.directory / (LATEST + ".tmp")
            pointer_tmp.write_text(final.name)
            os.replace(pointer_tmp, self.directory / LATEST)
            event = dataclasses.replace(event, path=str(final), time=time.time())
            with open(self.output_dir / EVENTS, "a", encoding="utf-8") as f:
                f.write(event.to_json() + "\n")
            self._prune(final)
            if self.on_saved is not None:
                self.on_saved(event)
        _barrier()

    def _prune(self, newest: Path) -> None:
        done = sorted(p for p in self.directory.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
        for old in done[: max(0, len(done) - self.keep)]:
            if old != newest:
                shutil.rmtree(old, ignore_errors=True)

    def check_compatible(self, path: Path) -> None:
        """Refuse a checkpoint of another model shape before anything is loaded.

        The mesh may differ: DCP reshards on load, and the data stream does not depend on it.
        So may the RoPE base: the context schedule sets it from the resumed step.
        """
        meta_path = path / META
        if not meta_path.is_file():
            raise CheckpointError(f"{meta_path}: missing; {path} was not written by hcx pretrain")
        saved = json.loads(meta_path.read_text())
        saved_model, model = _model_fields(saved.get("model", {})), _model_fields(self.meta["model"])
        diffs = [
            f"model.{key}: checkpoint {saved_model.get(key)!r}, recipe {value!r}"
            for key, value in model.items()
            if key != "rope_base" and saved_model.get(key) != value
        ]
        if saved.get("lora") != self.meta.get("lora"):  # adapters (or none) of another shape
            diffs.append(f"lora: checkpoint {saved.get('lora')!r}, recipe {self.meta.get('lora')!r}")
        if diffs:
            raise CheckpointError(f"{path} was saved by a different configuration:\n  " + "\n  ".join(diffs))

    def load(self, model, optimizer, train_template: dict[str, Any]) -> dict[str, Any] | None:
        """Restore the latest checkpoint into ``model``/``optimizer``; return its train state."""
        path = latest_checkpoint(self.directory)
        if path is None:
            return None
        self.check_compatible(path)
        state = {**self._state(model, optimizer), "train": train_template}
        run_dcp(dcp.load, state, checkpoint_id=str(path))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        return state["train"]
