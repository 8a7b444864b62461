"""Reading training text: JSON Lines files (optionally gzip), one document per line.

Every document is either *training* or *held out*, decided by a hash of its text
(:mod:`hcx.data.held_out`), so the tokenizer never trains on the documents that
``hcx tokenizer stats``, the benchmark and bits per byte measure on, whichever files they come from.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from pathlib import Path

from hcx.data.held_out import is_held_out
from hcx.records import BadRecordError, Rejected, iter_rows


class TokenizerInputError(ValueError):
    """Training input that cannot be used; the message names the file (and line)."""


def expand_inputs(patterns: Sequence[str | Path]) -> list[Path]:
    """Files named by paths or glob patterns, in order, each pattern matching at least one file."""
    files: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        matches = [m for m in matches if Path(m).is_file()]
        if not matches:
            raise TokenizerInputError(f"no input file matches {text}")
        files.extend(Path(m) for m in matches if Path(m) not in files)
    return files


def read_documents(path: Path, field: str = "text") -> Iterator[str]:
    """Documents of one ``.jsonl`` or ``.jsonl.gz`` file; bad lines raise with file and line number."""
    try:
        for lineno, record in iter_rows(path):
            if isinstance(record, Rejected):
                raise TokenizerInputError(f"{path}:{lineno}: {record}")
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise TokenizerInputError(f"{path}:{lineno}: no string field {field!r}")
            yield record[field]
    except (BadRecordError, FileNotFoundError) as exc:
        raise TokenizerInputError(str(exc)) from None


def select_documents(
    path: Path,
    *,
    held_out: bool,
    fraction: float,
    field: str = "text",
    max_docs: int | None = None,
    max_bytes: int | None = None,
) -> Iterator[str]:
    """The training (``held_out=False``) or measurement documents of one file, up to the caps."""
    docs = size = 0
    for text in read_documents(path, field):
        if is_held_out(text, fraction) != held_out:
            continue
        if (max_docs is not None and docs >= max_docs) or (max_bytes is not None and size >= max_bytes):
            return
        docs += 1
        size += len(text.encode("utf-8", "surrogatepass"))
        yield text
