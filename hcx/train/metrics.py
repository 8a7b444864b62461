"""Training logs: one JSON object per line always, a progress bar when on a terminal."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

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
        self.path = Path(output_dir) / "train_log.jsonl"
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
