from __future__ import annotations

from pathlib import Path

import pytest

from hcx.paths import find_data_dir
from hcx.tokenizer import HcxTokenizer, load


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real shared data (../shared/data or $HCX_DATA_DIR); tests need it."""
    path = find_data_dir(required=True)
    assert path is not None
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tokenizer_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small hcx tokenizer (4,096 tokens) trained per session on slices of every shared language."""
    from tests.tokenizer.conftest import train_slice

    return train_slice(data_dir, tmp_path_factory.mktemp("tok") / "hcx", morpheme_aware=True)


@pytest.fixture(scope="session")
def tok(tokenizer_dir: Path) -> HcxTokenizer:
    return load(tokenizer_dir)
