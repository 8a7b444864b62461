from __future__ import annotations

from pathlib import Path

from hcx.data.held_out import is_held_out
from hcx.tokenizer.corpus import select_documents
from hcx.tokenizer.references import hcx_counter, load_reference
from hcx.tokenizer.stats import OURS, compare, held_out_documents
from tests.tokenizer.conftest import HELD_OUT, SLICE_BYTES


def test_held_out_documents_are_disjoint_from_training(data_dir: Path):
    path = data_dir / "pretrain" / "ko.jsonl.gz"
    held = list(select_documents(path, held_out=True, fraction=HELD_OUT, max_docs=200))
    trained = set(select_documents(path, held_out=False, fraction=HELD_OUT, max_bytes=SLICE_BYTES))
    assert len(held) == 200
    assert all(is_held_out(d, HELD_OUT) for d in held)
    assert not set(held) & trained


def test_table_counts_and_ratios(tokenizer_dir: Path, data_dir: Path):
    files = {lang: data_dir / "pretrain" / f"{lang}.jsonl.gz" for lang in ("ko", "en")}
    docs = held_out_documents(files, 100, HELD_OUT)
    ours = hcx_counter(OURS, tokenizer_dir)
    cl100k = load_reference("gpt4-cl100k", data_dir / "tokenizers")
    table = compare([ours, cl100k], docs)
    assert table.row(OURS).tokens["ko"] == sum(ours.count(docs["ko"]))
    assert table.ratio(OURS, "en") == 1.0
    assert table.bytes["ko"] == sum(len(d.encode()) for d in docs["ko"])
    # Even a 4k vocabulary trained on 300 kB of Korean beats GPT-4's 100k vocabulary on Korean.
    assert table.ratio("gpt4-cl100k", "ko") > 1.1
    assert table.avg_tokens(OURS, "ko") < table.avg_tokens("gpt4-cl100k", "ko")


def test_every_reference_tokenizer_loads_offline(data_dir: Path):
    from hcx.tokenizer.config import REFERENCE_NAMES

    text = "한국어는 어근 의미 형태소에 문법 형태소를 붙여 단어를 형성하는 응집형 언어이다."
    counts = {
        name: load_reference(name, data_dir / "tokenizers").count([text])[0] for name in REFERENCE_NAMES
    }
    # The counts published in tokenizers/MANIFEST.md for this sentence.
    assert counts["gpt4-cl100k"] == 48
    assert counts["llama3-128k"] == 29
    assert counts["gpt2-50k"] == 102
    assert counts["polyglot-ko-30k"] == 26
    assert counts["exaone3.5-102k"] == 23
    assert counts["kogpt2-v1-50k"] == 19
    assert counts["mistral-v0.3-32k"] == 50
    assert counts["llama2-32k"] == 70
