"""Resuming training: the slow stages' results are kept on disk between runs.

Counting words of each input file and analysing Korean words with Kiwi take most of the
training time; a re-run (after an interruption, or with another ``vocab_size`` or
``min_frequency``) reloads them and goes straight to BPE. Entries are keyed by everything
that changes their content (file size and modification time, caps, held-out fraction,
Kiwi version), so a stale entry is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import kiwipiepy


class StageCache:
    """Pickled values by key in ``directory``; a ``None`` directory caches nothing."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory else None

    def load(self, key: str) -> Any | None:
        if self.directory is None or not (path := self.directory / f"{key}.pkl").is_file():
            return None
        try:
            with path.open("rb") as handle:
                return pickle.load(handle)
        except (OSError, pickle.UnpicklingError, EOFError):
            return None

    def save(self, key: str, value: Any) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f".{key}.{os.getpid()}.tmp"
        with partial.open("wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        partial.replace(self.directory / f"{key}.pkl")


def _digest(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]


def counts_key(path: Path, **selection: Any) -> str:
    stat = path.stat()
    fields = {"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns, **selection}
    return f"counts-{path.name}-{_digest(fields)}"


def morphemes_key(join_grammatical: bool) -> str:
    return f"kiwi-{_digest({'kiwi': kiwipiepy.__version__, 'join_grammatical': join_grammatical})}"
