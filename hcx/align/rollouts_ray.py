"""PPO rollouts on Ray actors, on one machine or across a cluster (SPEC §5.3).

The report parallelises PPO with asynchronous processing across nodes. Here each rollout
worker is a Ray actor holding an :class:`~hcx.infer.engine.Engine` on its own copy of the
policy. The learner publishes weights once per version (one ``ray.put`` of the state dict;
an actor loads it when a batch asks for a version it does not have) and hands every batch
out in shards, one per actor; each actor streams its rollouts back as they finish (a Ray
streaming generator) and the learner consumes them in arrival order, whichever actor they
come from. Ray queues an actor's calls, so an actor starts its shard of the next batch as
soon as it finishes this one, within the staleness window of :mod:`hcx.align.rollouts`.

Actors need only the ``hcx`` package on their node: the model config, tokenizer, weights and
prompts all travel through Ray's object store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import ray
import torch

from hcx.align.config import RayRolloutConfig
from hcx.align.experience import Rollout
from hcx.align.rollouts import RolloutRequest, stream_rollouts
from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.model.config import ModelConfig
from hcx.model.transformer import Transformer
from hcx.tokenizer import Tokenizer


class RolloutActor:
    """One rollout worker: an engine over a policy copy, with weights loaded by version.

    ``generate`` calls run one at a time in the order they were submitted; ``abort`` runs in
    its own concurrency group so it can end a ``generate`` that is in progress.
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        tokenizer: Tokenizer,
        engine_cfg: EngineConfig,
        worker: int,
        threads: int,
    ):
        torch.set_num_threads(threads)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = Transformer(model_cfg)
        self.model = model.to(device).eval().requires_grad_(False)
        self.engine = Engine(self.model, tokenizer, engine_cfg)
        self.worker = worker
        self.version = -1
        self.aborted_round = -1

    def generate(
        self, round_: int, version: int, weights: list[ray.ObjectRef], requests: list[RolloutRequest]
    ) -> Iterator[Rollout]:
        """Rollouts of ``requests`` with policy ``version``, yielded as each finishes.

        ``weights`` wraps the state dict's reference in a list so that Ray does not fetch it
        for every call, only when the version changes.
        """
        if round_ <= self.aborted_round:
            return
        if version != self.version:
            self.model.load_state_dict(ray.get(weights[0]))
            self.engine.forget_cached_prefixes()
            self.version = version
        yield from stream_rollouts(
            self.engine, requests, version, self.worker, lambda: round_ <= self.aborted_round
        )

    @ray.method(concurrency_group="control")
    def abort(self, round_: int) -> None:
        self.aborted_round = max(self.aborted_round, round_)


def connect(cfg: RayRolloutConfig) -> bool:
    """Join the configured cluster, or start a local Ray; True when this call started it."""
    if ray.is_initialized():
        return False
    if cfg.address is None:
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=cfg.address, log_to_driver=False)
    return True


class RayRollouts:
    """The learner's side: actors, published weights and the streams of each pending batch."""

    def __init__(
        self,
        cfg: RayRolloutConfig,
        workers: int,
        model_cfg: ModelConfig,
        weights: Callable[[], dict[str, torch.Tensor]],
        tokenizer: Tokenizer,
        engine_cfg: EngineConfig,
        requests_for: Callable[[int], list[RolloutRequest]],
        max_lag: int,
    ):
        self.owns_ray = connect(cfg)
        actor_class = ray.remote(
            num_cpus=cfg.worker_cpus, num_gpus=cfg.worker_gpus, concurrency_groups={"control": 1}
        )(RolloutActor)
        threads = max(1, int(cfg.worker_cpus))
        self.actors = [
            actor_class.remote(model_cfg, tokenizer, engine_cfg, rank, threads) for rank in range(workers)
        ]
        self.weights_of = weights
        self.requests_for = requests_for
        self.max_lag = max_lag
        self.round = 0
        self.pending: dict[int, list[Any]] = {}

    def start(self, first_batch: int, version: int) -> None:
        self.round += 1
        self.next_batch = first_batch
        self.publish(version)

    def publish(self, version: int) -> None:
        weights = {name: tensor.detach().to("cpu", copy=True) for name, tensor in self.weights_of().items()}
        self.version, self.weights = version, ray.put(weights)
        while self.next_batch <= version + self.max_lag:
            self._submit(self.next_batch)
            self.next_batch += 1

    def _submit(self, batch: int) -> None:
        requests, n = self.requests_for(batch), len(self.actors)
        self.pending[batch] = [
            actor.generate.remote(self.round, self.version, [self.weights], requests[rank::n])
            for rank, actor in enumerate(self.actors)
        ]

    def rollouts(self, batch: int) -> Iterator[Rollout]:
        streams = self.pending.pop(batch)
        while streams:
            ready, _ = ray.wait(streams, num_returns=1)
            for stream in ready:
                try:
                    ref = next(stream)
                except StopIteration:
                    streams.remove(stream)
                    continue
                yield ray.get(ref)

    def stop(self) -> None:
        """End this round: running shards abort at their next engine step, queued ones do nothing."""
        ray.get([actor.abort.remote(self.round) for actor in self.actors])
        self.pending.clear()

    def close(self) -> None:
        self.stop()
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.owns_ray:
            ray.shutdown()
