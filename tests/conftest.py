from __future__ import annotations

from pathlib import Path

import pytest

from hcx.paths import find_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real shared data (../shared/data or $HCX_DATA_DIR); tests need it."""
    path = find_data_dir(required=True)
    assert path is not None
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
