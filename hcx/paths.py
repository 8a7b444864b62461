"""Where the shared data lives.

The real data used by tests, benchmarks and the tiny recipe sits in ``../shared/data``
beside the checkout. ``HCX_DATA_DIR`` overrides it; otherwise the first ``shared/data``
found beside the current directory, the package or one of their ancestors is used.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "HCX_DATA_DIR"


class DataDirNotFound(FileNotFoundError):
    pass


def _candidates(start: Path) -> list[Path]:
    return [parent / "shared" / "data" for parent in [start, *start.parents]]


def find_data_dir(required: bool = True) -> Path | None:
    """Return the shared data directory, or None (or raise) when it cannot be found."""
    if env := os.environ.get(ENV_VAR):
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataDirNotFound(f"{ENV_VAR}={env} is not a directory")
        return path
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for candidate in _candidates(start):
            if candidate.is_dir():
                return candidate
    if required:
        raise DataDirNotFound(
            f"no shared/data directory found beside {Path.cwd()} or its parents; set {ENV_VAR}, "
            "or use a recipe whose sources name Hugging Face datasets"
        )
    return None
