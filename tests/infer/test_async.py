"""The streaming API: deltas add up to the batch result; cancelling frees the slot."""

from __future__ import annotations

import asyncio

import pytest

from hcx.infer.async_engine import AsyncEngine
from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.sampling import SamplingParams


@pytest.mark.parametrize("stream_interval", [1, 3])
def test_streams_add_up_to_the_batch_outputs(model, tok, korean_prompts, stream_interval):
    """Whatever the stream interval: the first token at once, then deltas of that many tokens
    (the last one may have fewer), adding up to the batch result, log-probabilities included."""
    prompts = korean_prompts[14:18]
    params = [SamplingParams(temperature=0.0, max_new_tokens=4 + 3 * i, stop_token_ids=[]) for i in range(4)]
    expected = Engine(model, tok).generate(prompts, params)

    async def run():
        server = AsyncEngine(Engine(model, tok, EngineConfig(max_running=2)), stream_interval)

        async def one(prompt, sp):
            return [delta async for delta in server.stream(prompt, sp)]

        streams = await asyncio.gather(*(one(p, sp) for p, sp in zip(prompts, params, strict=True)))
        whole = await server.generate(prompts[0], params[0])
        await server.close()
        return streams, whole

    streams, whole = asyncio.run(run())
    for deltas, want in zip(streams, expected, strict=True):
        assert [t for d in deltas for t in d.token_ids] == want.token_ids
        assert [lp for d in deltas for lp in d.logprobs] == pytest.approx(want.logprobs, rel=1e-9)
        assert "".join(d.text for d in deltas) == want.text
        assert [d.finish_reason for d in deltas][-1] == "length"
        assert all(d.finish_reason is None for d in deltas[:-1])
        sizes = [len(d.token_ids) for d in deltas]
        assert sizes[0] == 1 and all(size == stream_interval for size in sizes[1:-1])
        assert 1 <= sizes[-1] <= stream_interval
    assert whole.token_ids == expected[0].token_ids and whole.text == expected[0].text
    assert whole.logprobs == pytest.approx(expected[0].logprobs, rel=1e-9)


def test_cancelling_a_stream_frees_its_slot_and_blocks(model, tok, korean_prompts):
    """One slot: the second request can only run once the first, cancelled, has left."""
    engine = Engine(model, tok, EngineConfig(max_running=1, block_size=4, num_blocks=64))
    long = SamplingParams(temperature=0.0, max_new_tokens=200, stop_token_ids=[])
    short = SamplingParams(temperature=0.0, max_new_tokens=5, stop_token_ids=[])

    async def run():
        server = AsyncEngine(engine)
        received = 0
        waiting_while_first_runs = None

        async def consume_first():
            nonlocal received, waiting_while_first_runs
            async for _ in server.stream(korean_prompts[20], long, request_id="first"):
                received += 1
                if received == 3:
                    waiting_while_first_runs = engine.num_waiting
                    return

        second = asyncio.create_task(_collect(server.stream(korean_prompts[21], short, request_id="second")))
        await consume_first()
        deltas = await asyncio.wait_for(second, timeout=60)
        used_after = engine.pool.num_used
        await server.close()
        return received, waiting_while_first_runs, deltas, used_after

    received, waiting, deltas, used_after = asyncio.run(run())
    assert received == 3
    assert waiting == 1, "the second request waits for the only slot while the first streams"
    assert len([t for d in deltas for t in d.token_ids]) == 5
    assert used_after == 0 and engine.pool.num_free == engine.pool.num_blocks
    assert not engine.has_unfinished()


async def _collect(stream):
    return [delta async for delta in stream]


def test_cancelling_the_consumer_task_aborts_the_request(model, tok, korean_prompts):
    engine = Engine(model, tok, EngineConfig(block_size=4, num_blocks=64))
    params = SamplingParams(temperature=0.0, max_new_tokens=200, stop_token_ids=[])

    async def run():
        server = AsyncEngine(engine)
        started = asyncio.Event()

        async def consume():
            async for _ in server.stream(korean_prompts[22], params):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        assert engine.num_running == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(100):
            if not engine.has_unfinished():
                break
            await asyncio.sleep(0.01)
        await server.close()

    asyncio.run(run())
    assert not engine.has_unfinished()
    assert engine.pool.num_free == engine.pool.num_blocks


def test_close_ends_running_streams_and_frees_the_engine(model, tok, korean_prompts):
    engine = Engine(model, tok, EngineConfig(block_size=4, num_blocks=64))
    params = SamplingParams(temperature=0.0, max_new_tokens=200, stop_token_ids=[])

    async def run():
        server = AsyncEngine(engine)
        stream = server.stream(korean_prompts[23], params)
        await anext(stream)
        await server.close()
        received = 1
        with pytest.raises(RuntimeError, match="engine was closed"):
            async for _ in stream:
                received += 1
        assert received < 200
        with pytest.raises(RuntimeError, match="engine was closed"):
            await anext(server.stream(korean_prompts[24], params))

    asyncio.run(run())
    assert not engine.has_unfinished()
    assert engine.pool.num_free == engine.pool.num_blocks
