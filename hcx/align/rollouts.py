"""Where PPO's rollouts come from (SPEC §5.3: asynchronous rollouts, continuous batching).

Every backend follows the same contract, so the learner's loop and its staleness bound do not
depend on where generation runs:

- ``start(first_batch, version)`` then ``publish(version)`` after each learner update: batch
  ``b`` may be generated once version ``b - max_lag`` is published, and is generated with the
  newest published weights. A rollout of batch ``b``, consumed at iteration ``b``, therefore
  lags at most ``max_lag`` versions behind the learner.
- ``rollouts(batch)`` yields that batch's rollouts one by one, as each finishes.
- ``stop()`` abandons generation in flight (the end of one ``train`` call); ``close()`` also
  frees the workers.

:class:`InlineRollouts` generates in the learner's own thread (synchronous PPO),
:class:`ThreadRollouts` in a second thread of this process while the learner trains, and
:mod:`hcx.align.rollouts_ray` spreads batches over Ray actors on one machine or many.

Threads on the CPU: each Python thread that runs torch operations gets its own OpenMP team,
and GNU OpenMP (torch's) stops its workers' spin-waiting as soon as the process holds more
OpenMP threads than cores; every small operation then pays a worker wake-up. On the tiny
recipe that made each of the learner's operations 2-3x slower than the same operation
without the rollout thread. So synchronous PPO generates inline (one team), and the rollout
thread of asynchronous PPO takes ``threads`` of the process's threads while the learner
keeps the rest, their sum no more than before.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import torch

from hcx.align.experience import Rollout
from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.sampling import SamplingParams
from hcx.model import ModelConfig, Transformer
from hcx.tokenizer import Tokenizer

RolloutRequest = tuple[list[int], SamplingParams]
"""A prompt's token ids and how to sample it (its per-request seed included)."""


class RolloutSource(Protocol):
    def start(self, first_batch: int, version: int) -> None: ...

    def publish(self, version: int) -> None: ...

    def rollouts(self, batch: int) -> Iterator[Rollout]: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


def rollout_seed(seed: int, batch: int, index: int) -> int:
    """The sampling seed of prompt ``index`` of rollout batch ``batch``: the same on every backend."""
    return seed * 1_000_003 + batch * 10_007 + index


def stream_rollouts(
    engine: Engine,
    requests: Sequence[RolloutRequest],
    version: int,
    worker: int = 0,
    stopped: Callable[[], bool] = lambda: False,
    step_guard: AbstractContextManager | None = None,
) -> Iterator[Rollout]:
    """Generate ``requests`` together on ``engine``; yield each rollout as soon as it finishes.

    ``step_guard`` is held around every engine step (the learner swaps weights between steps);
    when ``stopped()`` turns true the requests still running are aborted.
    """
    guard = step_guard or nullcontext()
    running = {}
    for prompt, params in requests:
        request = engine.make_request(prompt, params)
        engine.add(request)
        running[request.request_id] = request
    try:
        while running and not stopped():
            with guard:
                deltas = engine.step()
            for delta in deltas:
                if delta.finished and delta.request_id in running:
                    request = running.pop(delta.request_id)
                    text = engine.tokenizer.decode(request.output_ids) if engine.tokenizer else ""
                    yield Rollout(
                        list(request.prompt_ids),
                        list(request.output_ids),
                        list(request.logprobs),
                        text,
                        version,
                        worker,
                    )
    finally:
        for request_id in running:
            engine.abort(request_id)


class PolicyCopy:
    """An unsharded copy of the policy and an engine on it, refreshed from the learner's weights.

    ``weights()`` gives the policy's whole current weights; it is called in the learner's thread
    (where a sharded policy can gather them). The copy is on ``device`` in ``dtype`` (the
    stage's compute dtype).
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        weights: Callable[[], dict[str, torch.Tensor]],
        tokenizer: Tokenizer,
        engine_cfg: EngineConfig,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        self.weights = weights
        with torch.device("meta"):
            model = Transformer(model_cfg)
        self.copy = model.to_empty(device=device or "cpu").to(dtype=dtype).eval().requires_grad_(False)
        self.engine = Engine(self.copy, tokenizer, engine_cfg)
        self.weights_lock = threading.Lock()

    def refresh(self) -> None:
        weights = self.weights()
        with self.weights_lock:
            self.copy.load_state_dict(weights)
            self.engine.forget_cached_prefixes()


class InlineRollouts(PolicyCopy):
    """Synchronous rollouts: the learner's own thread generates a batch when it asks for it.

    Rollouts are yielded one by one as they finish, like the other backends' (the learner's
    clock counts the wait for each as generation); synchronous PPO scores them once all arrived.
    """

    def __init__(self, *args, requests_for: Callable[[int], list[RolloutRequest]], **kwargs):
        super().__init__(*args, **kwargs)
        self.requests_for = requests_for

    def start(self, first_batch: int, version: int) -> None:
        self.publish(version)

    def publish(self, version: int) -> None:
        self.refresh()
        self.version = version

    def rollouts(self, batch: int) -> Iterator[Rollout]:
        yield from stream_rollouts(self.engine, self.requests_for(batch), self.version)

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


class ThreadRollouts(PolicyCopy):
    """One thread in this process generates with a copy of the policy while the learner trains.

    The copy is refreshed under a lock between engine steps, so a batch that is already running
    continues with the new weights (its rollouts keep the version they started with). The
    thread runs torch with ``threads`` CPU threads and the learner with the rest (at least one)
    while it lives; the learner's count is restored at ``stop``.
    """

    def __init__(
        self,
        *args,
        requests_for: Callable[[int], list[RolloutRequest]],
        per_batch: int,
        max_lag: int,
        threads: int,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.requests_for, self.per_batch = requests_for, per_batch
        self.max_lag = max_lag
        self.threads = threads
        self.released = threading.Condition()
        self.thread: threading.Thread | None = None

    def start(self, first_batch: int, version: int) -> None:
        self.out: queue.Queue[Rollout | BaseException] = queue.Queue()
        self.stop_event = threading.Event()
        self.next_batch, self.last_batch = first_batch, first_batch - 1
        self.publish(version)
        self.learner_threads = torch.get_num_threads()
        torch.set_num_threads(max(1, self.learner_threads - self.threads))
        self.thread = threading.Thread(target=self._run, name="ppo-rollouts", daemon=True)
        self.thread.start()

    def publish(self, version: int) -> None:
        self.refresh()
        with self.released:
            self.version, self.last_batch = version, version + self.max_lag
            self.released.notify_all()

    def rollouts(self, batch: int) -> Iterator[Rollout]:
        for _ in range(self.per_batch):
            item = self.out.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run(self) -> None:
        torch.set_num_threads(self.threads)
        try:
            while not self.stop_event.is_set():
                with self.released:
                    while self.next_batch > self.last_batch and not self.stop_event.is_set():
                        self.released.wait(timeout=0.5)
                    version = self.version
                if self.stop_event.is_set():
                    return
                requests = self.requests_for(self.next_batch)
                for rollout in stream_rollouts(
                    self.engine, requests, version, 0, self.stop_event.is_set, self.weights_lock
                ):
                    self.out.put(rollout)
                self.next_batch += 1
        except BaseException as exc:  # surfaced in the learner thread
            self.out.put(exc)

    def stop(self) -> None:
        if self.thread is None:
            return
        self.stop_event.set()
        with self.released:
            self.released.notify_all()
        self.thread.join(timeout=60)
        self.thread = None
        torch.set_num_threads(self.learner_threads)

    def close(self) -> None:
        self.stop()
