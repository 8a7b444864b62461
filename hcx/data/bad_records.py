"""Bad input records: where they are, why they are bad, and what the run does about them.

Policy ``skip`` counts each bad record, logs it (file:line and reason) and carries on;
the records are listed in ``stats.json`` and ``summary.md``. Policy ``fail`` stops the run
with an error naming the file and line. Nothing else is lost either way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


class BadInputError(ValueError):
    """Raised under the ``fail`` policy; the message starts with ``file:line``."""


@dataclass(frozen=True)
class BadRecord:
    source: str
    path: str
    line: int
    reason: str

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path

    def __str__(self) -> str:
        return f"{self.location}: {self.reason} (source {self.source!r})"


def write_bad_records(path: Path, records: list[BadRecord]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")


def read_bad_records(folder: Path) -> list[BadRecord]:
    records = []
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        with path.open(encoding="utf-8") as f:
            records.extend(BadRecord(**json.loads(line)) for line in f if line.strip())
    return sorted(records, key=lambda r: (r.path, r.line))
