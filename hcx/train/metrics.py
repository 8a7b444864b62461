"""Training logs: one JSON object per line always, a progress bar when on a terminal.

``train_log.jsonl`` and ``events.jsonl`` are append-only. A process killed while appending
leaves a torn last line (no newline, usually not valid JSON): readers skip it with a warning
and the next writer removes it before appending, so a crash never turns into garbage in the
middle of the file. A bad line anywhere else is not a crash artefact and raises
:class:`hcx.records.BadRecordError` naming ``file:line``. Every reader of these files goes
through :func:`read_jsonl_log` (:func:`read_log` and :func:`read_steps` for a training log's
records, :func:`parse_log_line` for a reader that tails a growing log).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from hcx.records import BadRecordError, Rejected

log = logging.getLogger(__name__)
LOG_NAME = "train_log.jsonl"
RESTARTS = ("start", "resume")

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def guess_peak_tflops(device) -> float | None:
    """bf16 dense peak of known GPUs (for MFU); None on CPUs, where it is not well defined."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def is_step_record(record: dict[str, Any]) -> bool:
    """A ``train_log.jsonl`` line with a step's metrics (not a start/context/resume/export event)."""
    return "step" in record and "event" not in record


def _torn_tail(data: bytes) -> bytes:
    """What follows the last newline: a line whose write was cut short (or b"")."""
    return data[data.rfind(b"\n") + 1 :]


def parse_log_line(raw: bytes) -> dict[str, Any] | Rejected:
    """One line of a JSON Lines log: its record, or why it is not one (for readers that tail a log)."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejected("invalid JSON", str(exc))
    return record if isinstance(record, dict) else Rejected("not a JSON object")


def read_jsonl_log(path: str | Path) -> list[dict[str, Any]]:
    """Every record of an append-only JSON Lines log; [] when there is none.

    A torn last line is skipped with a warning; any other line that is not a JSON object raises
    :class:`BadRecordError` with ``file:line``. The file is read once, so a writer appending
    meanwhile only ever shows up as a torn last line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")  # the last item is what follows the last newline
    records: list[dict[str, Any]] = []
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        row = parse_log_line(raw)
        if isinstance(row, dict):
            records.append(row)
        elif line_no == len(lines):
            log.warning("%s:%d: skipping a torn last line (a write cut short): %s", path, line_no, row)
        else:
            raise BadRecordError(f"{path}:{line_no}: {row}")
    return records


def drop_torn_tail(path: str | Path) -> None:
    """Make a log end with a whole line before appending: a torn last line is cut off (with a
    warning), a complete record that only lacks its newline gets one."""
    path = Path(path)
    if not path.is_file():
        return
    data = path.read_bytes()
    tail = _torn_tail(data)
    if not tail.strip():
        return
    if isinstance(parse_log_line(tail), dict):
        with open(path, "ab") as f:
            f.write(b"\n")
        return
    log.warning("%s: removing a torn last line of %d bytes (a write cut short)", path, len(tail))
    os.truncate(path, len(data) - len(tail))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """A ``train_log.jsonl``'s records as the run now stands, in order.

    A ``start`` or ``resume`` event at step S (``start``: 0) drops the earlier records of steps
    after S: the restarted run redoes those steps and logs them again, so no step appears twice.
    """
    records: list[dict[str, Any]] = []
    for record in read_jsonl_log(path):
        if record.get("event") in RESTARTS:
            restart = int(record.get("step", 0))
            records = [r for r in records if not (isinstance(r.get("step"), int) and r["step"] > restart)]
        records.append(record)
    return records


def read_steps(path: str | Path) -> list[dict[str, Any]]:
    """The step records of a ``train_log.jsonl`` (what loss curves are drawn from)."""
    return [r for r in read_log(path) if is_step_record(r)]


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append one timed record to a ``train_log.jsonl`` (the pipeline tails it into MLflow)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"time": time.time(), **record}, ensure_ascii=False) + "\n")


class MetricsLog:
    """Appends records to ``train_log.jsonl``; only rank 0 writes and shows progress."""

    def __init__(
        self,
        output_dir: str | Path,
        total_steps: int,
        start_step: int,
        enabled: bool = True,
        desc: str = "pretrain",
    ):
        self.enabled = enabled
        self.path = Path(output_dir) / LOG_NAME
        if enabled:
            drop_torn_tail(self.path)
            read_jsonl_log(self.path)  # a bad line in the middle stops the run here, named
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            desc=desc,
            unit="step",
            disable=None if enabled else True,
        )

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_record(self.path, record)
        if "loss" in record:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)

    def advance(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
