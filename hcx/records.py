"""Reading JSON Lines records with a policy for bad ones, shared by every stage that reads rows.

Each bad record is reported with its ``file:line`` and a short reason. Policy ``skip``
counts it (by reason, with the first locations kept for the log) and carries on; policy
``fail`` stops with :class:`BadRecordError`. Nothing else is lost either way.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

T = TypeVar("T")
Policy = Literal["skip", "fail"]


def read_json_file(
    path: Path, error: type[Exception] = ValueError, what: str = "JSON", hint: str = ""
) -> Any:
    """A JSON file's value; ``error`` naming the file when it is not UTF-8 JSON (``what`` names the
    kind of file, ``hint`` what to do about it)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: corrupted, not valid {what} ({exc}){hint}") from None


class BadRecordError(ValueError):
    """A record that cannot be used under the ``fail`` policy; the message starts with ``file:line``."""


class Rejected(ValueError):
    """Why one record is not used: a short ``kind`` for the counts and a detail for the log."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass
class ReadReport:
    """What reading kept and skipped, for logs and the stage's stats."""

    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples_of_skips: list[str] = field(default_factory=list)

    def skip(self, kind: str, message: str) -> None:
        self.skipped[kind] += 1
        if len(self.examples_of_skips) < 20:
            self.examples_of_skips.append(message)

    def as_dict(self) -> dict[str, Any]:
        return {"kept": self.kept, "skipped": dict(self.skipped), "examples": list(self.examples_of_skips)}


def iter_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line, record)`` for every non-blank line; a bad line yields a :class:`Rejected` as its record.

    A file that cannot be read to its end (a truncated gzip, say) raises :class:`BadRecordError`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    yield line_no, orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    reason = "not valid UTF-8" if "utf-8" in str(exc).lower() else "invalid JSON"
                    yield line_no, Rejected(reason, str(exc))
    except (OSError, EOFError) as exc:
        raise BadRecordError(f"{path}: cannot read ({exc})") from None


def read_records(
    path: str | Path,
    parse: Callable[[Mapping[str, Any]], T],
    policy: Policy = "skip",
    limit: int | None = None,
    report: ReadReport | None = None,
    what: str = "data",
) -> list[T]:
    """``parse`` every object row of a jsonl(.gz) file; ``parse`` raises :class:`Rejected` for a bad one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    report = report if report is not None else ReadReport()
    items: list[T] = []
    for line_no, row in iter_rows(path):
        try:
            if isinstance(row, Rejected):
                raise row
            if not isinstance(row, Mapping):
                raise Rejected("not an object")
            items.append(parse(row))
        except Rejected as exc:
            if policy == "fail":
                raise BadRecordError(f"{path}:{line_no}: {exc}") from None
            report.skip(exc.kind, f"{path}:{line_no}: {exc}")
            continue
        report.kept += 1
        if limit is not None and len(items) >= limit:
            break
    return items


def hold_out(items: list[T], n: int, seed: int) -> tuple[list[T], list[T]]:
    """``n`` items set aside at random (seeded) and the rest, for held-out evaluation."""
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:n], shuffled[n:]
