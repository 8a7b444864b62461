"""Held-out text for the ``hcx_bpb_*`` tasks, read from the shared pretraining files."""

from __future__ import annotations

from typing import Any

import datasets

from hcx.data.held_out import BPB_BYTES, language_texts
from hcx.eval.local_data import MissingBenchmarkError
from hcx.paths import find_data_dir


def load_held_out(
    language: str, data_dir: str | None = None, max_bytes: int = BPB_BYTES, **_: Any
) -> datasets.DatasetDict:
    root = data_dir or find_data_dir(required=False)
    if root is None:
        raise MissingBenchmarkError(
            f"hcx_bpb_{language}: held-out text comes from the shared data; set --data-dir or $HCX_DATA_DIR"
        )
    texts = language_texts(language, max_bytes, root)
    return datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": list(texts)})})
