"""Real Korean text from the shared corpus; the session's hcx tokenizer is in tests/conftest.py."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from hcx.tokenizer import HcxTokenizer


def read_texts(path: Path, limit: int, skip: int = 0) -> list[str]:
    texts = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < skip:
                continue
            if len(texts) == limit:
                break
            texts.append(json.loads(line)["text"])
    return texts


@pytest.fixture(scope="session")
def korean_texts(data_dir: Path) -> list[str]:
    return read_texts(data_dir / "pretrain" / "ko.jsonl.gz", 3000)


@pytest.fixture(scope="session")
def tokenizer(tok: HcxTokenizer) -> HcxTokenizer:
    return tok


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests run on one intra-op thread: on a shared 2-core box two spinning OpenMP threads per
    process slow small models down by an order of magnitude, and the results do not depend on it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
