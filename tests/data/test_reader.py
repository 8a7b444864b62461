"""Reading sources: every bad record is named by file and line, skipped and counted, or fatal."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hcx.data.bad_records import BadInputError, read_bad_records
from hcx.data.config import SourceConfig
from hcx.data.reader import SourceReader

GOOD = [{"text": f"문서 {i} 내용입니다.", "id": i, "source": "fixture"} for i in range(3)]


def bad_file(tmp_path):
    lines = [
        json.dumps(GOOD[0], ensure_ascii=False).encode(),
        b'{"text": "unterminated',
        json.dumps({"body": "no text field", "id": 9}).encode(),
        b'{"text": "caf\xe9 latin-1 byte"}',
        json.dumps(GOOD[1], ensure_ascii=False).encode(),
        b"",
        json.dumps({"text": 42}).encode(),
        json.dumps(GOOD[2], ensure_ascii=False).encode(),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def read(source, tmp_path, policy="skip", rank=0, world_size=1):
    reader = SourceReader(source, policy, str(tmp_path / "bad"), progress=False)
    return list(reader.run(None, rank, world_size)), reader


def test_bad_records_are_skipped_counted_and_located(tmp_path):
    path = bad_file(tmp_path)
    source = SourceConfig(name="mixed", paths=[str(path)], segment="korean", language="ko")
    docs, reader = read(source, tmp_path)
    assert [d.text for d in docs] == [g["text"] for g in GOOD]
    assert [d.id for d in docs] == ["mixed/0", "mixed/1", "mixed/2"]
    assert docs[0].metadata == {
        "segment": "korean",
        "language": "ko",
        "source": "mixed",
        "origin": "fixture",
        "weight": 1.0,
    }
    bad = read_bad_records(tmp_path / "bad")
    assert [(r.line, r.reason.split(" (")[0]) for r in bad] == [
        (2, "malformed JSON"),
        (3, "missing text field 'text'"),
        (4, "invalid UTF-8 at byte 13"),
        (6, "blank line"),
        (7, "text field 'text' is int, not a string"),
    ]
    assert all(r.path == str(path) for r in bad)
    assert reader.stats["bad_records"].total == 5


def test_fail_policy_stops_at_the_first_bad_line(tmp_path):
    path = bad_file(tmp_path)
    source = SourceConfig(name="mixed", paths=[str(path)], segment="korean", language="ko")
    with pytest.raises(BadInputError, match=rf"^{path}:2: malformed JSON"):
        read(source, tmp_path, policy="fail")


def test_empty_and_truncated_files_are_bad_input(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"text": "a full line"}\n{"text": "second"}\n')[:-12])
    source = SourceConfig(name="odd", paths=[str(empty), str(truncated)], segment="korean", language="ko")
    docs, _ = read(source, tmp_path)
    assert [d.text for d in docs] == ["a full line", "second"][: len(docs)]
    reasons = {(r.path, r.line): r.reason for r in read_bad_records(tmp_path / "bad")}
    assert reasons[(str(empty), 0)] == "empty file"
    assert any(path == str(truncated) and "unreadable" in reason for (path, _), reason in reasons.items())


def test_parquet_sources(tmp_path):
    path = tmp_path / "part.parquet"
    pq.write_table(pa.table({"content": ["첫 번째", "두 번째"], "id": ["a", "b"]}), path)
    source = SourceConfig(name="pq", paths=[str(path)], segment="korean", language="ko", text_field="content")
    docs, _ = read(source, tmp_path)
    assert [(d.id, d.text) for d in docs] == [("pq/a", "첫 번째"), ("pq/b", "두 번째")]


def test_one_file_is_split_by_record_across_tasks_and_bad_lines_reported_once(tmp_path):
    path = bad_file(tmp_path)
    source = SourceConfig(name="mixed", paths=[str(path)], segment="korean", language="ko")
    shards = [read(source, tmp_path / str(rank), rank=rank, world_size=2)[0] for rank in range(2)]
    assert sorted(d.id for shard in shards for d in shard) == ["mixed/0", "mixed/1", "mixed/2"]
    assert all(shards)
    reported = [r.line for rank in range(2) for r in read_bad_records(tmp_path / str(rank) / "bad")]
    assert sorted(reported) == [2, 3, 4, 6, 7]


def test_selection_and_cap_on_real_data(data_dir, tmp_path):
    source = SourceConfig(
        name="korquad",
        paths=[str(data_dir / "pretrain" / "ko.jsonl.gz")],
        segment="korean",
        language="ko",
        include={"source": ["korquad_v1_dev_contexts"]},
        max_documents=25,
    )
    docs, _ = read(source, tmp_path)
    assert len(docs) == 25
    assert {d.metadata["origin"] for d in docs} == {"korquad_v1_dev_contexts"}
    shards = [read(source, tmp_path, rank=r, world_size=3)[0] for r in range(3)]
    assert sorted(d.id for s in shards for d in s) == sorted(d.id for d in docs)


def test_missing_file_names_the_source(tmp_path):
    source = SourceConfig(name="gone", paths=[str(tmp_path / "nope.jsonl")], segment="code", language="code")
    with pytest.raises(FileNotFoundError, match="gone"):
        read(source, tmp_path)
