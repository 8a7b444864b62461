"""Training, the engine, scoring, evaluation and PPO all run the one forward and agree on its logits.

Every path below is ``Transformer.forward`` with another attention context (causal, packed
documents, paged KV cache); in float64 they give the same numbers for the
same tokens up to summation order.
"""

from __future__ import annotations

import torch

from hcx.align.experience import response_logits
from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.kv_pool import BlockPool
from hcx.infer.scoring import score_continuations
from hcx.infer.step import SequenceChunk, pack_step, paged_forward
from hcx.model import DocumentCausal

ATOL = 1e-10


def test_every_caller_gets_the_training_forward_logits(model, korean_prompts):
    context, continuation = korean_prompts[3], korean_prompts[7][:12]
    tokens = torch.tensor([context + continuation])
    with torch.no_grad():
        training = model(tokens)[0]
    logprobs = training.log_softmax(-1)
    targets = torch.tensor(continuation)
    start = len(context) - 1
    expected = logprobs[start : start + len(continuation)].gather(-1, targets[:, None])[:, 0]

    # packed training: the sequence as the second document of a row, positions restarting
    other = korean_prompts[11]
    packed = torch.tensor([other + context + continuation])
    doc_ids = torch.tensor([[0] * len(other) + [1] * tokens.shape[1]])
    positions = torch.cat([torch.arange(len(other)), torch.arange(tokens.shape[1])])[None]
    with torch.no_grad():
        row = model(packed, attention=DocumentCausal(doc_ids, positions, "segments"))[0]
    torch.testing.assert_close(row[len(other) :], training, rtol=0, atol=ATOL)

    # the engine: one prefill step over the paged cache
    pool = BlockPool(model.cfg, num_blocks=64, block_size=8, dtype=torch.float64)
    sequence = context + continuation
    chunk = SequenceChunk(sequence, 0, pool.allocate(pool.blocks_for(len(sequence))))
    step = pack_step([chunk], [True], pool.block_size)
    step.logits_index = torch.arange(len(sequence))
    torch.testing.assert_close(paged_forward(model, pool, step), training, rtol=0, atol=ATOL)

    # scoring: PPO's reference pass, and the engine's scoring requests (evaluation), the second
    # choice reading the context's keys and values from the prefix cache
    (scored,) = score_continuations(model, [context], [continuation])
    torch.testing.assert_close(scored.logprobs, expected, rtol=0, atol=ATOL)
    engine = Engine(model, config=EngineConfig(block_size=4))
    first, second = engine.score([context, context], [continuation[:1], continuation])
    assert engine.scheduler.num_prefix_hits >= (len(context) - 1) // 4 * 4
    torch.testing.assert_close(first.logprobs, expected[:1], rtol=0, atol=ATOL)
    torch.testing.assert_close(second.logprobs, expected, rtol=0, atol=ATOL)

    # PPO's learner: response logits at the response positions only
    index = torch.arange(start, start + len(continuation))[None]
    with torch.no_grad():
        ppo = response_logits(model, tokens, index)[0]
    torch.testing.assert_close(ppo, training[start : start + len(continuation)].float(), rtol=0, atol=1e-6)
