"""The unconstrained ablation tokenizer; the hcx one (``tokenizer_dir``, ``tok``) is in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from hcx.tokenizer import train_tokenizer

SLICE_BYTES = 300_000
VOCAB_SIZE = 4096
HELD_OUT = 0.05
LANGUAGES = ("ko", "en", "ja", "zh", "de", "fr", "code")


def pretrain_files(data_dir: Path) -> list[Path]:
    return [data_dir / "pretrain" / f"{lang}.jsonl.gz" for lang in LANGUAGES]


def train_slice(data_dir: Path, out: Path, morpheme_aware: bool) -> Path:
    return train_tokenizer(
        files=pretrain_files(data_dir),
        vocab_size=VOCAB_SIZE,
        output_dir=out,
        morpheme_aware=morpheme_aware,
        held_out_fraction=HELD_OUT,
        max_bytes_per_file=SLICE_BYTES,
    )


@pytest.fixture(scope="session")
def ablation_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_slice(data_dir, tmp_path_factory.mktemp("tok") / "ablation", morpheme_aware=False)


@pytest.fixture(scope="session")
def mistral_chat_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tokenizer.hf_chat_dirs import mistral_dir

    return mistral_dir(data_dir, tmp_path_factory.mktemp("tok") / "mistral")


@pytest.fixture(scope="session")
def chatml_polyglot_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tokenizer.hf_chat_dirs import chatml_polyglot_dir

    return chatml_polyglot_dir(data_dir, tmp_path_factory.mktemp("tok") / "polyglot")
