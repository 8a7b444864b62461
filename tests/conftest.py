from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hcx.data.held_out import is_held_out
from hcx.paths import find_data_dir
from hcx.tokenizer import HcxTokenizer, load
from tests.postgres import INSTALL_HINT, PostgresServer, server_binaries


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real shared data (../shared/data or $HCX_DATA_DIR); tests need it."""
    path = find_data_dir(required=True)
    assert path is not None
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (a throwaway cluster), stopped and deleted afterwards."""
    bin_dir = server_binaries()
    if bin_dir is None:
        pytest.fail(INSTALL_HINT)
    server = PostgresServer(bin_dir)
    server.start()
    yield server
    server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, then a database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/test.db"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tokenizer_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small hcx tokenizer (4,096 tokens) trained per session on slices of every shared language."""
    from tests.tokenizer.conftest import train_slice

    return train_slice(data_dir, tmp_path_factory.mktemp("tok") / "hcx", morpheme_aware=True)


@pytest.fixture(scope="session")
def tok(tokenizer_dir: Path) -> HcxTokenizer:
    return load(tokenizer_dir)


@pytest.fixture(scope="session")
def corpus_glob(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> str:
    """Two jsonl.gz files (Korean, English) with the corpus builder's fields, from the shared data."""
    from tests.model.conftest import read_texts

    out = tmp_path_factory.mktemp("corpus")
    for language, limit in (("ko", 1500), ("en", 200)):
        texts = read_texts(data_dir / "pretrain" / f"{language}.jsonl.gz", limit, skip=3000)
        texts = [text for text in texts if not is_held_out(text)]  # bits per byte measures those
        with gzip.open(out / f"{language}.jsonl.gz", "wt", encoding="utf-8") as f:
            for i, text in enumerate(texts):
                record = {"text": text, "id": f"{language}-{i}", "segment": language, "language": language}
                f.write(json.dumps({**record, "source": "shared"}, ensure_ascii=False) + "\n")
    return str(out / "*.jsonl.gz")


@pytest.fixture(scope="session")
def base_model_dir(tokenizer_dir: Path, corpus_glob: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny decoder briefly pretrained on real shared text by `hcx pretrain` and exported to HF."""
    from hcx.train.config import PretrainConfig
    from hcx.train.pretrain import Pretrainer

    out = tmp_path_factory.mktemp("base")
    cfg = PretrainConfig.model_validate(
        {
            "corpus": corpus_glob,
            "tokenizer": str(tokenizer_dir),
            "output_dir": str(out / "run"),
            "model": {"preset": "tiny", "vocab_size": None, "n_layers": 2, "max_seq_len": 512},
            "steps": 40,
            "stages": [{"fraction": 1.0, "seq_len": 256, "batch_size": 8, "rope_base": 10_000}],
            "optim": {"lr": 3e-3, "warmup_steps": 5},
            "checkpoint": {"every": 1000},
            "dtype": "float32",
            "export_hf": str(out / "hf"),
        }
    )
    result = Pretrainer(cfg).train()
    assert result.hf_dir is not None and result.losses[-1] < result.losses[0]
    return result.hf_dir
