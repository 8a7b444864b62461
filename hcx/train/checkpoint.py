"""Training checkpoints with torch.distributed.checkpoint (SPEC §4, §5.4).

Every rank writes its shards of the model and optimizer, plus the scheduler, step, data
position and RNG state, into ``step_NNNNNNN.tmp``; only when all ranks are done does rank 0
rename it to ``step_NNNNNNN`` and then replace the ``latest`` pointer (both atomic renames).
A process killed during a save therefore leaves a stray ``.tmp`` directory and the previous
checkpoint still named by ``latest``. A save that fails (a full disk, a file size limit) removes
its ``.tmp`` directory and raises :class:`CheckpointError` naming the checkpoint and the cause.
After the rename a :class:`CheckpointSaved` record is appended to ``events.jsonl`` and handed
to the ``on_saved`` callback on rank 0: that is how the alignment pipeline, which passes its
publish step as the callback, learns of checkpoints to evaluate asynchronously (SPEC §5.4).
Training itself knows nothing of the pipeline.

``hcx_meta.json`` lists every other file of the checkpoint with its size and SHA-256 (each rank
hashes a share of the files). Loading checks them first, so a truncated, altered or missing
file is an error naming that file, never a silent wrong resume. There is no fallback to an
older checkpoint: ``latest`` names the one to resume, and a damaged one needs a person to
decide (point ``latest`` at an older ``step_*`` directory, or start over).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from hcx.model.load import FILES, LATEST, META, file_problem, run_dcp, sha256_of
from hcx.records import read_json_file
from hcx.train.metrics import drop_torn_tail, read_jsonl_log

EVENTS = "events.jsonl"
DISK_FULL = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "the file size limit was reached",
    errno.EDQUOT: "the disk quota is used up",
}
log = logging.getLogger(__name__)


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
    return [CheckpointSaved(**record) for record in read_jsonl_log(path)]


def is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _gather(items: list[Any]) -> list[Any]:
    """Every rank's ``items`` concatenated, on every rank."""
    if not dist.is_initialized():
        return items
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def file_records(directory: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file of a checkpoint directory but its meta; each rank hashes a share."""
    rank, world = _rank_and_world()
    names = sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != META)
    mine = [
        (name, {"bytes": (directory / name).stat().st_size, "sha256": sha256_of(directory / name)})
        for name in names[rank::world]
    ]
    return dict(sorted(_gather(mine)))


def read_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's ``hcx_meta.json``; CheckpointError naming it when missing or not a JSON object."""
    meta_path = path / META
    if not meta_path.is_file():
        raise CheckpointError(
            f"{meta_path}: missing; {path} was not written by hcx or its save did not finish"
        )
    meta = read_json_file(meta_path, CheckpointError)
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{meta_path}: corrupted, not a JSON object with a 'model' config")
    return meta


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check every file of a checkpoint against the sizes and hashes in its meta; return the meta.

    Each rank checks a share of the files; every rank raises the same :class:`CheckpointError`.
    A checkpoint saved before files were recorded is loaded unchecked, with a warning.
    """
    path = Path(path)
    meta = read_meta(path)
    expected = meta.get(FILES)
    if expected is None:
        log.warning("%s: saved without file hashes; its files cannot be checked before loading", path / META)
        return meta
    if not isinstance(expected, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("bytes"), int) and isinstance(v.get("sha256"), str)
        for v in expected.values()
    ):
        raise CheckpointError(f"{path / META}: corrupted '{FILES}' list of sizes and hashes")
    rank, world = _rank_and_world()
    names = sorted(expected)
    problems = [p for n in names[rank::world] if (p := file_problem(path / n, expected[n])) is not None]
    problems = _gather(problems)
    if problems:
        raise CheckpointError(
            f"checkpoint {path} is damaged and cannot be resumed:\n  " + "\n  ".join(problems)
        )
    return meta


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind a failed save (DCP wraps a rank's failure in a CheckpointException)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError):
            return current
        if isinstance(current, CheckpointException):
            todo.extend(
                failure[0] if isinstance(failure, tuple) else failure for failure in current.failures.values()
            )
        todo.extend([current.__cause__, current.__context__])
    return None


def _save_failure(final: Path, exc: BaseException, previous: Path | None) -> str:
    error = _os_error(exc)
    if error is not None and error.errno in DISK_FULL:
        cause = f"{DISK_FULL[error.errno]} ({error})"
    else:
        cause = f"{type(error or exc).__name__}: {error or exc}"
    kept = f"the latest checkpoint is still {previous}" if previous else "there is no earlier checkpoint"
    return f"checkpoint {final} was not saved: {cause}; its partial files were removed and {kept}"


def latest_checkpoint(directory: str | Path) -> Path | None:
    pointer = Path(directory) / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_bytes().decode("utf-8", errors="replace").strip()
    path = Path(directory) / name
    if not name.startswith("step_") or "/" in name or not path.is_dir():
        raise CheckpointError(f"{pointer} names {name!r}, which is not a checkpoint directory of {directory}")
    if not (path / ".metadata").is_file():
        raise CheckpointError(f"{pointer} names {path}, which is not a complete checkpoint (no .metadata)")
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
        with self._removed_on_failure(tmp, final):
            if is_rank0():
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            _barrier()
            state = {**self._state(model, optimizer), "train": train_state}
            if self.async_save:
                future = run_dcp(dcp.async_save, state, checkpoint_id=str(tmp))
                self._pending = (future, tmp, final, event)
                return
            run_dcp(dcp.save, state, checkpoint_id=str(tmp))
            self._publish(tmp, final)
        self._announce(final, event)

    def wait(self) -> None:
        """Finish an asynchronous save in flight (before the next save and at the end of training)."""
        if self._pending is None:
            return
        future, tmp, final, event = self._pending
        self._pending = None
        with self._removed_on_failure(tmp, final):
            future.result()
            self._publish(tmp, final)
        self._announce(final, event)

    @contextmanager
    def _removed_on_failure(self, tmp: Path, final: Path) -> Iterator[None]:
        """A save that fails leaves nothing behind and raises CheckpointError saying why."""
        pointer_tmp = self.directory / (LATEST + ".tmp")
        try:
            yield
        except (Exception, CheckpointException) as exc:
            if is_rank0():
                shutil.rmtree(tmp, ignore_errors=True)
                pointer_tmp.unlink(missing_ok=True)
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(_save_failure(final, exc, self._previous())) from exc

    def _previous(self) -> Path | None:
        """The checkpoint ``latest`` names, if it names one (for messages about a failed save)."""
        try:
            return latest_checkpoint(self.directory)
        except CheckpointError:
            return None

    def _publish(self, tmp: Path, final: Path) -> None:
        """Record the files' hashes, then make ``final`` the latest checkpoint with two renames.

        Everything that needs disk space is written before the first rename, so running out of
        it leaves ``latest`` naming the previous checkpoint. Every rank raises if rank 0 fails.
        """
        _barrier()
        files = file_records(tmp)
        error: list[str | None] = [None]
        if is_rank0():
            try:
                (tmp / META).write_text(json.dumps({**self.meta, FILES: files}, indent=1, sort_keys=True))
                pointer_tmp = self.directory / (LATEST + ".tmp")
                pointer_tmp.write_text(final.name)
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
                os.replace(pointer_tmp, self.directory / LATEST)
            except OSError as exc:
                error = [_save_failure(final, exc, self._previous())]
        if dist.is_initialized():
            dist.broadcast_object_list(error, src=0)
        if error[0] is not None:
            raise CheckpointError(error[0])

    def _announce(self, final: Path, event: CheckpointSaved) -> None:
        """Append the saved record to events.jsonl, prune old checkpoints, call ``on_saved`` (rank 0)."""
        if is_rank0():
            event = dataclasses.replace(event, path=str(final), time=time.time())
            events = self.output_dir / EVENTS
            drop_torn_tail(events)
            with open(events, "a", encoding="utf-8") as f:
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

    def check_compatible(self, path: Path, saved: dict[str, Any] | None = None) -> None:
        """Refuse a checkpoint of another model shape before anything is loaded.

        The mesh may differ: DCP reshards on load, and the data stream does not depend on it.
        So may the RoPE base: the context schedule sets it from the resumed step.
        """
        saved = read_meta(path) if saved is None else saved
        saved_model, model = _model_fields(saved["model"]), _model_fields(self.meta["model"])
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
        """Restore the latest checkpoint into ``model``/``optimizer``; return its train state.

        Its files are checked against the hashes saved with it first (:func:`verify_checkpoint`).
        """
        path = latest_checkpoint(self.directory)
        if path is None:
            return None
        self.check_compatible(path, verify_checkpoint(path))
        state = {**self._state(model, optimizer), "train": train_template}
        try:
            run_dcp(dcp.load, state, checkpoint_id=str(path))
        except (Exception, CheckpointException) as exc:
            raise CheckpointError(f"checkpoint {path} cannot be loaded: {_os_error(exc) or exc}") from exc
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        return state["train"]
