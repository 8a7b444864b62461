from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hcx.align.batching import length_grouped, make_batches, packed_rows, similar_length_groups
from hcx.align.conversations import IGNORE_INDEX, SftExample, read_conversations
from hcx.model import ModelConfig, Transformer
from hcx.tokenizer import HcxTokenizer


@pytest.fixture(scope="module")
def korean_examples(tok: HcxTokenizer, data_dir: Path) -> list[SftExample]:
    return read_conversations(data_dir / "sft" / "ko.jsonl.gz", tok, max_len=256, limit=120)


def summed_loss(model: Transformer, batches, packed: bool) -> tuple[float, int]:
    total, count = 0.0, 0
    for batch in batches:
        doc_ids = batch.doc_ids if packed else None
        logits = model(batch.inputs, batch.positions, doc_ids)
        total += F.cross_entropy(
            logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        ).item()
        count += int((batch.targets != IGNORE_INDEX).sum())
    return total, count


def test_packed_equals_unpacked_loss(tok: HcxTokenizer, korean_examples: list[SftExample]) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(preset="tiny", vocab_size=tok.vocab_size, n_layers=2, max_seq_len=256)
    model = Transformer(cfg)
    model.init_weights(seed=0)
    model.eval()
    examples = korean_examples[:40]
    with torch.no_grad():
        padded = summed_loss(model, make_batches(examples, "padded", tok.pad_id, 0, 0, batch_size=8), False)
        packed = summed_loss(model, make_batches(examples, "packed", tok.pad_id, 512, 128), True)
    assert padded[1] == packed[1] == sum(sum(t != IGNORE_INDEX for t in e.targets) for e in examples)
    assert packed[0] / packed[1] == pytest.approx(padded[0] / padded[1], abs=1e-4)


def test_grouped_batches_stay_under_the_token_budget(korean_examples: list[SftExample]) -> None:
    lengths = [len(e.inputs) for e in korean_examples]
    groups = length_grouped(lengths, max_tokens=300, seed=1, pool=64)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(len(g) * max(lengths[i] for i in g) <= 300 for g in groups)
    for batch in make_batches(korean_examples, "grouped", 1, 300, 0, seed=1):
        assert batch.inputs.numel() <= 300


def test_grouped_batching_pads_less_than_naive(korean_examples: list[SftExample]) -> None:
    def padding(batches) -> float:
        real = sum(b.inputs.numel() for b in batches)
        useful = sum(len(e.inputs) for e in korean_examples)
        return 1 - useful / real

    naive = padding(make_batches(korean_examples, "padded", 1, 0, 0, batch_size=16))
    grouped = padding(make_batches(korean_examples, "grouped", 1, 16 * 40, 0))
    assert grouped < naive / 2


def test_packing_fits_rows_and_keeps_every_sample() -> None:
    lengths = [50, 30, 70, 20, 90, 10, 60]
    rows = packed_rows(lengths, 100)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 100 for row in rows)
    assert len(rows) == 4  # 330 tokens need at least 4 rows of 100
    with pytest.raises(ValueError, match="over the packed row length"):
        packed_rows([101], 100)


def test_packed_positions_restart_per_sample(korean_examples: list[SftExample], tok: HcxTokenizer) -> None:
    batch = make_batches(korean_examples[:10], "packed", tok.pad_id, 128, 128)[0]
    for row in range(batch.inputs.shape[0]):
        ids, pos = batch.doc_ids[row], batch.positions[row]
        starts = torch.nonzero(torch.diff(ids) != 0).flatten() + 1
        assert all(pos[s] == 0 for s in starts.tolist())
        assert pos[0] == 0


def padded_tokens(lengths: list[int], groups: list[list[int]]) -> int:
    return sum(len(g) * max(lengths[i] for i in g) for g in groups)


def test_similar_length_groups_pad_least_within_the_budget() -> None:
    """Against every split of the sorted lengths into runs: the cheapest one, budget respected."""
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 8))]
        budget, overhead = rng.choice([256, 512, 1024]), 16
        groups = similar_length_groups(lengths, budget, overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        assert all(len(g) == 1 or len(g) * max(lengths[i] for i in g) <= budget for g in groups)
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        best = min(
            padded_tokens(lengths, runs) + overhead * len(runs)
            for cuts in itertools.product([False, True], repeat=len(order) - 1)
            for runs in [split_at(order, cuts)]
            if all(len(r) == 1 or len(r) * max(lengths[i] for i in r) <= budget for r in runs)
        )
        assert padded_tokens(lengths, groups) + overhead * len(groups) == best


def split_at(order: list[int], cuts: tuple[bool, ...]) -> list[list[int]]:
    runs, current = [], [order[0]]
    for index, cut in zip(order[1:], cuts, strict=True):
        if cut:
            runs.append(current)
            current = []
        current.append(index)
    return [*runs, current]


def test_a_long_tail_of_prompt_lengths_is_not_padded_into_short_rows() -> None:
    lengths = [75, 75, 77, 78, 78, 83, 83, 88, 88, 132, 155, 165, 191, 234, 235, 275]
    groups = similar_length_groups(lengths, 2048)
    assert padded_tokens(lengths, groups) < 1.1 * sum(lengths) < 0.6 * len(lengths) * max(lengths)
