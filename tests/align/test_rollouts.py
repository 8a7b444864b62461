"""Where rollouts are generated: inline for synchronous PPO, a sized thread for asynchronous PPO."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from hcx.align.ppo import PpoTrainer
from hcx.align.rollouts import InlineRollouts, ThreadRollouts
from tests.align.test_ppo import ppo_config


def first_batch(trainer: PpoTrainer) -> list[tuple[list[int], list[int], list[float]]]:
    source = trainer.ppo.rollouts()
    source.start(first_batch=0, version=0)
    try:
        got = [(r.prompt_ids, r.response_ids, r.logprobs) for r in source.rollouts(0)]
    finally:
        source.stop()
    return sorted(got)


def test_synchronous_rollouts_are_generated_in_the_learners_thread(
    policy_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """No second thread (and no second OpenMP team) in synchronous PPO, and the same rollouts
    as the asynchronous thread draws from the same weights and per-request seeds."""
    settings = {"rollouts_per_iteration": 8, "max_new_tokens": 16}
    sync = PpoTrainer(ppo_config(policy_dir, data_dir, tmp_path / "sync", asynchronous=False, **settings))
    asynchronous = PpoTrainer(ppo_config(policy_dir, data_dir, tmp_path / "async", **settings))
    assert isinstance(sync.ppo.rollouts(), InlineRollouts)
    assert isinstance(asynchronous.ppo.rollouts(), ThreadRollouts)

    threads_before = set(threading.enumerate())
    source = sync.ppo.rollouts()
    source.start(first_batch=0, version=0)
    inline = []
    for rollout in source.rollouts(0):
        assert set(threading.enumerate()) == threads_before
        inline.append((rollout.prompt_ids, rollout.response_ids, rollout.logprobs))
    assert len(inline) == 8 and any(len(response) > 1 for _, response, _ in inline)

    threaded = first_batch(asynchronous)
    assert [(p, r) for p, r, _ in sorted(inline)] == [(p, r) for p, r, _ in threaded]
    for (_, _, got), (_, _, want) in zip(sorted(inline), threaded, strict=True):
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=1e-6)


def test_the_rollout_thread_takes_its_threads_and_the_learner_keeps_the_rest(
    policy_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        trainer = PpoTrainer(
            ppo_config(
                policy_dir,
                data_dir,
                tmp_path / "ppo",
                rollouts_per_iteration=4,
                max_new_tokens=4,
                rollout_threads=1,
            )
        )
        source = trainer.ppo.rollouts()
        seen_in_thread: list[int] = []
        requests_for = source.requests_for

        def recording(batch: int):
            seen_in_thread.append(torch.get_num_threads())
            return requests_for(batch)

        source.requests_for = recording
        source.start(first_batch=0, version=0)
        learner_while_running = torch.get_num_threads()
        assert len(list(source.rollouts(0))) == 4
        source.stop()
        assert seen_in_thread and set(seen_in_thread) == {1}
        assert learner_while_running == 2
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
