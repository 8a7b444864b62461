"""Helpers for the corpus-builder tests: real records from the shared pretraining files."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

from datatrove.data import Document

SEGMENT_OF = {"ko": "korean", "code": "code"}


@cache
def _records(path: Path, id_field: str) -> dict[tuple[str, str], dict]:
    records: dict[tuple[str, str], dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            records.setdefault((record.get("source", record.get("repo")), record.get(id_field)), record)
    return records


def real_record(data_dir: Path, language: str, source: str, record_id: str, id_field: str = "id") -> dict:
    """The first record of ``pretrain/<language>.jsonl.gz`` with this source and id."""
    record = _records(data_dir / "pretrain" / f"{language}.jsonl.gz", id_field).get((source, record_id))
    if record is None:
        raise LookupError(f"{source}/{record_id} not in {language}.jsonl.gz")
    return record


def real_document(
    data_dir: Path, language: str, source: str, record_id: str, id_field: str = "id"
) -> Document:
    record = real_record(data_dir, language, source, record_id, id_field)
    segment = SEGMENT_OF.get(language, "multilingual")
    return Document(text=record["text"], id=record_id, metadata={"language": language, "segment": segment})
