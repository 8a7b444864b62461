"""Reading one recipe source into datatrove ``Document``s, validating every record.

datatrove's JsonlReader logs and skips malformed lines, silently drops records without
text and abandons a file at the first invalid UTF-8 byte; a corpus builder must instead
say which file and line was bad and either count it or stop (hcx.data.bad_records).

Sharding: a source with at least as many files as tasks is split by file (datatrove's
usual unit); a source with fewer files (e.g. one big ``ko.jsonl.gz``) is split by record,
task ``r`` keeping every ``r``-th selected record, so small recipes still use every worker.
"""

from __future__ import annotations

import glob
import gzip
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseReader
from datatrove.utils.logging import logger
from tqdm import tqdm

from hcx.data.bad_records import BadInputError, BadRecord, write_bad_records
from hcx.data.config import SourceConfig
from hcx.data.held_out import HELD_OUT_FRACTION, is_held_out

Row = tuple[int, dict[str, Any] | None, str | None]  # (line, record, error)


def expand_paths(source: SourceConfig) -> list[str]:
    files: list[str] = []
    for pattern in source.paths:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        files.extend(matches)
    missing = [f for f in files if not Path(f).is_file()]
    if missing or not files:
        raise FileNotFoundError(f"source {source.name!r}: no such file {missing or source.paths}")
    return files


def _iter_jsonl(path: str) -> Iterator[Row]:
    opener = gzip.open if path.endswith(".gz") else open
    line_no = 0
    try:
        with opener(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                if not raw.strip():
                    yield line_no, None, "blank line"
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield line_no, None, f"invalid UTF-8 at byte {exc.start}"
                    continue
                try:
                    record = orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    yield line_no, None, f"malformed JSON ({exc})"
                    continue
                if not isinstance(record, dict):
                    yield line_no, None, f"expected a JSON object, got {type(record).__name__}"
                    continue
                yield line_no, record, None
    except (EOFError, OSError, zlib.error) as exc:
        yield line_no + 1, None, f"unreadable file after line {line_no} ({exc})"
        return
    if line_no == 0:
        yield 0, None, "empty file"


def _iter_parquet(path: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    row = 0
    for batch in pq.ParquetFile(path).iter_batches():
        for record in batch.to_pylist():
            row += 1
            yield row, record, None
    if row == 0:
        yield 0, None, "empty file"


def _iter_hf(source: SourceConfig) -> Iterator[Row]:
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(f"source {source.name!r}: hf_dataset needs `pip install datasets`") from exc
    dataset = datasets.load_dataset(source.hf_dataset, split=source.hf_split, streaming=True)
    for row, record in enumerate(dataset, start=1):
        yield row, record, None


def iter_rows(path: str) -> Iterator[Row]:
    return _iter_parquet(path) if path.endswith(".parquet") else _iter_jsonl(path)


class SourceReader(BaseReader):
    """Reads one source of the recipe; yields documents tagged with segment, language, source, weight."""

    name = "📖 hcx source"

    def __init__(
        self,
        source: SourceConfig,
        on_bad_record: str,
        bad_records_dir: str,
        progress: bool = True,
        held_out_fraction: float = HELD_OUT_FRACTION,
    ):
        self.name = f"📖 {source.name}"  # before super().__init__, which names the stats after it
        super().__init__(text_key=source.text_field, id_key=source.id_field)
        self.source = source
        self.held_out_fraction = held_out_fraction
        self.on_bad_record = on_bad_record
        self.bad_records_dir = bad_records_dir
        self.progress = progress

    def _selected(self, record: dict[str, Any]) -> bool:
        for field, allowed in self.source.include.items():
            if str(record.get(field)) not in allowed:
                return False
        return all(str(record.get(field)) not in denied for field, denied in self.source.exclude.items())

    def _validate(self, record: dict[str, Any]) -> str | None:
        key = self.source.text_field
        if key not in record:
            return f"missing text field {key!r} (fields: {sorted(record)[:8]})"
        if not isinstance(record[key], str):
            return f"text field {key!r} is {type(record[key]).__name__}, not a string"
        if not record[key].strip():
            return f"text field {key!r} is empty"
        return None

    def _document(self, record: dict[str, Any], fallback_id: str) -> Document:
        source = self.source
        record_id = record.get(source.id_field)
        origin = record.get("source")
        return Document(
            text=record[source.text_field],
            id=f"{source.name}/{record_id if record_id is not None else fallback_id}",
            metadata={
                "segment": source.segment,
                "language": source.language,
                "source": source.name,
                "origin": origin if isinstance(origin, str) else source.name,
                "weight": source.weight,
            },
        )

    def _streams(self, rank: int, world_size: int) -> tuple[list[tuple[str, Iterator[Row]]], bool]:
        """(name, rows) per input this task reads, and whether records are split across tasks."""
        if self.source.hf_dataset:
            return [(f"hf://{self.source.hf_dataset}", _iter_hf(self.source))], True
        files = expand_paths(self.source)
        if len(files) >= world_size:
            return [(f, iter_rows(f)) for f in files[rank::world_size]], False
        return [(f, iter_rows(f)) for f in files], True

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        streams, split_records = self._streams(rank, world_size)
        cap = self.source.max_documents
        if cap is not None and not split_records:
            cap = math.ceil(cap / world_size)
        bad: list[BadRecord] = []
        selected = 0
        progress = tqdm(
            desc=f"read {self.source.name} [{rank}]", unit="doc", disable=not self.progress, leave=False
        )
        try:
            for file_index, (path, rows) in enumerate(streams):
                for line, record, error in rows:
                    if cap is not None and selected >= cap:
                        break
                    owner = (line % world_size == rank) if split_records else True
                    if error is None and record is not None:
                        if not self._selected(record):
                            continue
                        error = self._validate(record)
                    if error is not None:
                        if owner:
                            self._bad(BadRecord(self.source.name, path, line, error), bad)
                        continue
                    if is_held_out(record[self.source.text_field], self.held_out_fraction):
                        if owner:
                            self.stat_update("held_out")
                        continue
                    mine = selected % world_size == rank if split_records else True
                    selected += 1
                    if not mine:
                        continue
                    document = self._document(record, f"{file_index}:{line}")
                    self.stat_update("documents")
                    self.update_doc_stats(document)
                    progress.update()
                    yield document
        finally:
            progress.close()
            if bad:
                write_bad_records(Path(self.bad_records_dir) / f"{rank:05d}.{self.source.name}.jsonl", bad)

    def _bad(self, record: BadRecord, bad: list[BadRecord]) -> None:
        if self.on_bad_record == "fail":
            raise BadInputError(f"{record} — set data.on_bad_record=skip to skip and count such records")
        self.stat_update("bad_records")
        if len(bad) < 20:
            logger.warning(f"skipping bad record {record}")
        bad.append(record)
