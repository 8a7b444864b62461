"""The packed, paged forward gives the model's own logits (SPEC §5.3 engine)."""

from __future__ import annotations

import copy

import pytest
import torch

from hcx.infer.kv_pool import BlockPool
from hcx.infer.step import SequenceChunk, group_by_context_length, pack_step, paged_forward
from hcx.model import Transformer


def _step_logits(
    model: Transformer, pool: BlockPool, chunks: list[SequenceChunk], free_padding: int
) -> tuple[list[torch.Tensor], int]:
    """Logits of every token of the step, per chunk, and the number of attention groups."""
    step = pack_step(chunks, [True] * len(chunks), pool.block_size, free_padding=free_padding)
    step.logits_index = torch.arange(len(step.tokens))
    logits = paged_forward(model, pool, step)
    return list(logits.split([len(c.token_ids) for c in chunks])), len(step.groups)


@pytest.mark.parametrize("free_padding", [2048, 0])
def test_chunked_prefill_and_decode_steps_match_model_forward(model, korean_prompts, free_padding):
    """Three steps over four real sequences (one long: five user turns in a row): prefill
    chunks of different lengths beside one-token decodes, across block boundaries
    (block_size 4). With ``free_padding=0`` short and long contexts attend in separate groups."""
    long = [t for p in korean_prompts[27:32] for t in p]
    prompts = [korean_prompts[0], long, korean_prompts[29], korean_prompts[5]]
    cuts = [[5, 5, 5, 5], [6, len(long) - 1, 6, len(prompts[3]) - 1], [7, len(long), 7, len(prompts[3])]]
    pool = BlockPool(model.cfg, num_blocks=128, block_size=4, dtype=torch.float64)
    with torch.no_grad():
        expected = [model(torch.tensor([p]))[0] for p in prompts]
    tables = [pool.allocate(pool.blocks_for(len(p))) for p in prompts]
    done = [0] * len(prompts)
    groups_seen = []
    for cut in cuts:
        chunks = [SequenceChunk(p[d:c], d, t) for p, d, c, t in zip(prompts, done, cut, tables, strict=True)]
        got, groups = _step_logits(model, pool, chunks, free_padding)
        groups_seen.append(groups)
        for logits, want, d, c in zip(got, expected, done, cut, strict=True):
            torch.testing.assert_close(logits, want[d:c], rtol=0, atol=1e-10)
        done = cut
    # step 2: decodes apart from prefills, the long prefill apart from the short one; step 3:
    # four decodes, without free padding the long context apart from the short ones
    assert groups_seen == ([1, 3, 1] if free_padding else [1, 3, 2])


def test_pack_step_asks_logits_only_for_last_tokens(model, korean_prompts):
    pool = BlockPool(model.cfg, num_blocks=16, block_size=8, dtype=torch.float64)
    prompts = korean_prompts[:3]
    chunks = [SequenceChunk(p, 0, pool.allocate(pool.blocks_for(len(p)))) for p in prompts]
    step = pack_step(chunks, [True, False, True], pool.block_size)
    ends = torch.tensor([len(prompts[0]), len(prompts[0]) + len(prompts[1]) + len(prompts[2])]) - 1
    assert torch.equal(step.logits_index, ends)
    logits = paged_forward(model, pool, step)
    with torch.no_grad():
        want = torch.stack([model(torch.tensor([p]))[0, -1] for p in (prompts[0], prompts[2])])
    torch.testing.assert_close(logits, want, rtol=0, atol=1e-10)


def test_float32_step_matches_model_forward_within_rounding(model, korean_prompts):
    """The dtype models run in: same logits up to float32 rounding of a different summation order."""
    model32 = copy.deepcopy(model).to(torch.float32)
    pool = BlockPool(model32.cfg, num_blocks=32, block_size=16)
    prompts = [korean_prompts[i] for i in (1, 28)]
    chunks = [SequenceChunk(p, 0, pool.allocate(pool.blocks_for(len(p)))) for p in prompts]
    got, _ = _step_logits(model32, pool, chunks, free_padding=2048)
    for prompt, logits in zip(prompts, got, strict=True):
        with torch.no_grad():
            want = model32(torch.tensor([prompt]))[0]
        torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-5)


def test_sequences_groupgroup_by_context_length_to_bound_padding():
    contexts = [300, 10, 12, 290, 11, 150]
    chunks = [SequenceChunk([1], n - 1, []) for n in contexts]
    groups = group_by_context_length(list(range(6)), chunks, slack=1.5, free_padding=0)
    assert groups == [[1, 4, 2], [5, 3, 0]]
    assert group_by_context_length(list(range(6)), chunks, free_padding=2048) == [[1, 4, 2, 5, 3, 0]]
