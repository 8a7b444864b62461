"""A small real tokenizer, a random tiny model and real Korean chat prompts from the shared data.

The model runs in float64: greedy decoding of a random model is deterministic, and in
double precision no argmax can flip between two computations of the same logits in a
different batch layout, so equality tests compare token ids exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hcx.infer.prompts import chat_prompt_ids, read_user_turns
from hcx.model import ModelConfig, Transformer
from hcx.tokenizer import HcxTokenizer


@pytest.fixture(autouse=True)
def one_thread():
    """Small matrices on a shared 2-core box: OpenMP threads only spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model(tok: HcxTokenizer) -> Transformer:
    cfg = ModelConfig(preset="tiny", vocab_size=tok.vocab_size, max_seq_len=256)
    model = Transformer(cfg)
    model.init_weights(seed=0)
    return model.to(torch.float64).eval()


@pytest.fixture(scope="session")
def korean_prompts(tok: HcxTokenizer, data_dir: Path) -> list[list[int]]:
    """Chat prompts from user turns of the Korean SFT set, spread over the file."""
    return chat_prompt_ids(tok, read_user_turns(data_dir / "sft" / "ko.jsonl.gz", limit=32, every=331))


@pytest.fixture(scope="session")
def korean_turns(data_dir: Path) -> list[str]:
    """Real Korean user turns from the shared SFT set, short enough to leave room for answers."""
    turns = read_user_turns(data_dir / "sft" / "ko.jsonl.gz", limit=400, every=13)
    return [t for t in turns if 10 <= len(t) <= 300][:96]
