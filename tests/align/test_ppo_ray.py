"""PPO rollouts on Ray actors, tested on a local Ray with two actors (SPEC §5.3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch

from hcx.align.experience import Rollout, response_logits, token_logprobs
from hcx.align.ppo import PpoTrainer, ppo
from tests.align.test_ppo import ppo_config


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module; PPO joins it rather than starting its own."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def by_prompt(rollouts: list[Rollout]) -> list[tuple[list[int], list[int]]]:
    return sorted((r.prompt_ids, r.response_ids) for r in rollouts)


def test_ray_rollouts_match_the_thread_and_follow_published_weights(
    local_ray: None, policy_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Same seeds give the same rollouts on two actors as on the thread; new weights reach the actors."""
    settings = {"asynchronous": False, "rollouts_per_iteration": 12, "max_new_tokens": 24, "held_out": 0}
    thread = PpoTrainer(ppo_config(policy_dir, data_dir, tmp_path / "thread", **settings))
    actors = PpoTrainer(
        ppo_config(policy_dir, data_dir, tmp_path / "ray", rollouts="ray", rollout_workers=2, **settings)
    )
    batches: dict[str, list[list[Rollout]]] = {}
    try:
        for name, trainer in (("thread", thread), ("ray", actors)):
            source = trainer.ppo.rollouts()
            source.start(first_batch=0, version=0)
            first = list(source.rollouts(0))
            with torch.no_grad():
                trainer.ppo.policy.output.weight.mul_(2.0)  # a sharper policy samples differently
            source.publish(1)
            batches[name] = [first, list(source.rollouts(1))]
            source.stop()
    finally:
        actors.close()
    thread_first, ray_first = batches["thread"][0], batches["ray"][0]
    assert len(ray_first) == 12 and {r.worker for r in ray_first} == {0, 1}
    assert by_prompt(ray_first) == by_prompt(thread_first)

    second = batches["ray"][1]
    assert {r.version for r in second} == {1} and {r.worker for r in second} == {0, 1}
    assert by_prompt(second) == by_prompt(batches["thread"][1])
    exp = actors.ppo.experience_from(second)
    with torch.no_grad():
        recomputed = token_logprobs(
            response_logits(actors.ppo.policy, exp.tokens, exp.index), exp.tokens, exp.index
        )
    assert torch.allclose(recomputed * exp.mask, exp.old_logprobs, atol=1e-4)
    assert float(((exp.ref_logprobs - exp.old_logprobs) * exp.mask).abs().sum()) > 1.0
    assert exp.mask.sum(-1).min() >= 1 and torch.isfinite(exp.advantages).all()


def test_asynchronous_ppo_on_two_ray_actors(
    local_ray: None, policy_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    cfg = ppo_config(
        policy_dir,
        data_dir,
        tmp_path / "ppo",
        rollouts="ray",
        rollout_workers=2,
        steps=3,
        rollouts_per_iteration=12,
        minibatch_size=12,
        max_new_tokens=16,
        held_out=0,
        eval_every=100,
    )
    result = ppo(cfg)
    assert result.metrics["iterations"] == 3 and Path(result.metrics["hf_dir"], "model.safetensors").is_file()
    log = [json.loads(line) for line in (tmp_path / "ppo" / "train_log.jsonl").read_text().splitlines()]
    its = [r for r in log if "reward" in r]
    assert len(its) == 3
    assert all(r["rollout_workers"] == 2 for r in its)
    assert all(r["max_staleness"] <= 1 for r in its) and max(r["staleness"] for r in its) > 0
    assert all(0 < r["length"] <= 16 and abs(r["kl"]) < 20.0 for r in its)
