"""PII scrubbing: precision/recall on the hand-written labelled sets, placeholders, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hcx.cli import app
from hcx.data.pii import PII_TYPES, find_pii, score_pii, scrub

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines() if line]


def test_labelled_set_is_large_and_covers_every_type():
    examples = load("pii_labelled.jsonl")
    assert len(examples) >= 150
    covered = {kind for e in examples for kind, _ in e["pii"]}
    assert covered == set(PII_TYPES)
    assert sum(1 for e in examples if not e["pii"]) >= 60
    assert {e["lang"] for e in examples} == {"ko", "en"}


@pytest.mark.parametrize("kind", PII_TYPES)
def test_precision_and_recall_per_type_on_development_set(kind):
    score = score_pii(load("pii_labelled.jsonl"))[kind]
    assert score["tp"] > 0
    assert score["precision"] >= 0.95, score
    assert score["recall"] >= 0.95, score


def test_holdout_set_scores():
    scores = score_pii(load("pii_holdout.jsonl"))
    tp = sum(s["tp"] for s in scores.values())
    fp = sum(s["fp"] for s in scores.values())
    fn = sum(s["fn"] for s in scores.values())
    assert tp / (tp + fp) >= 0.9
    assert tp / (tp + fn) >= 0.8


def test_hard_negatives_survive_untouched():
    for example in load("pii_labelled.jsonl") + load("pii_holdout.jsonl"):
        if not example["pii"]:
            assert scrub(example["text"])[0] == example["text"]


def test_placeholders_are_typed_and_email_keeps_its_domain():
    text = "연락처 010-1234-5678, 메일 hong.gildong@naver.com, 주민번호 900101-1234567"
    scrubbed, counts = scrub(text)
    assert scrubbed == "연락처 [PHONE], 메일 [EMAIL]@naver.com, 주민번호 [RRN]"
    assert counts == {"PHONE": 1, "EMAIL": 1, "RRN": 1}


def test_luhn_decides_card_numbers():
    assert [m.type for m in find_pii("card 4111-1111-1111-1111")] == ["CARD"]
    assert find_pii("card 4111-1111-1111-1112") == []


def test_private_and_loopback_addresses_are_kept():
    assert find_pii("router 192.168.0.1, localhost 127.0.0.1, lan 10.1.2.3") == []
    assert [m.value for m in find_pii("from 211.234.10.20")] == ["211.234.10.20"]


def test_scrub_pii_cli_keeps_other_fields(tmp_path):
    src = tmp_path / "in.jsonl"
    rows = [
        {"text": "전화 010-9876-5432 주세요", "id": 7, "source": "x"},
        {"text": "2024-01-15 기준 12,900원", "id": 8},
    ]
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["data", "scrub-pii", str(src), str(out)])
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert written == [{"text": "전화 [PHONE] 주세요", "id": 7, "source": "x"}, rows[1]]


def test_scrub_pii_cli_names_file_and_line_of_bad_json(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "ok"}\n{"text": broken\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["data", "scrub-pii", str(src), str(tmp_path / "out.jsonl")])
    assert result.exit_code == 1
    assert f"{src}:2" in result.output.replace("\n", "")
