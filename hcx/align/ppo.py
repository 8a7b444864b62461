"""PPO with the four networks (SPEC §5.3): ``hcx ppo RECIPE``.

- **policy** and frozen **reference**: the post-SFT model (with ``lora``: one model, the reference
  being the policy with its adapters off);
- **reward**: the reward model, normalised and clipped (or a rule-based reward);
- **value**: initialised from the reward model, as the report does.

Rollouts come from the inference engine's continuous batching, generated while the learner
trains on the last batch (``asynchronous``) by a thread in this process or by Ray actors on
one machine or many (``rollouts``, :mod:`hcx.align.rollouts`): finished rollouts arrive one by
one as they finish, and the learner scores them (reference log-probs, values, rewards) in
batches as they arrive. The generating copies of the policy lag at most ``max_staleness``
versions behind, and the lag is logged. Rewards carry a
per-token KL penalty to the reference (coefficient 0.04, fixed or adaptive); the policy
loss adds sequence-level unlikelihood on tokens that repeat an n-gram of their own
response; training stops early when KL, response length or validation reward drift.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from hcx.align.batching import similar_length_groups
from hcx.align.config import PpoConfig
from hcx.align.conversations import check_messages
from hcx.align.experience import (
    Experience,
    Rollout,
    concat,
    make_experience,
    response_logits,
    response_values,
    token_logprobs_and_entropy,
)
from hcx.align.losses import masked_mean, ppo_policy_loss, repeat_rate, unlikelihood_loss, value_loss, whiten
from hcx.align.phase_clock import PhaseClock
from hcx.align.reward_model import RewardModel, load_reward_model, shard_reward_model
from hcx.align.rewards import BrevityReward, HangulReward, ModelReward, Reward
from hcx.align.rollouts import (
    InlineRollouts,
    RolloutRequest,
    RolloutSource,
    ThreadRollouts,
    rollout_seed,
)
from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.sampling import SamplingParams
from hcx.model import Transformer
from hcx.model.hf import export_hf
from hcx.model.load import load_model
from hcx.model.transformer import canonical_name
from hcx.records import ReadReport, Rejected, hold_out, read_records
from hcx.tokenizer import Tokenizer
from hcx.tokenizer.hf_tokenizer import keep_chat_tokens
from hcx.train.checkpoint import CheckpointSaved
from hcx.train.lora import adapters_off, add_adapters, merged_weights
from hcx.train.parallel import Mesh
from hcx.train.trainer import MicroLoss, Task, Trainer, TrainResult


class PpoSetupError(ValueError):
    """PPO cannot start with these inputs; raised before any rollout."""


def most_across_ranks(count: int, mesh: Mesh) -> int:
    """The largest ``count`` over data-parallel ranks (itself on one rank)."""
    if mesh.dp == 1:
        return count
    value = torch.tensor(count, device=mesh.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=mesh.group("dp"))
    return int(value)


def mean_across_ranks(record: dict[str, Any], mesh: Mesh) -> dict[str, Any]:
    """Every number of an iteration's record averaged over data-parallel ranks (sums for token counts),
    so each rank logs, checks early stopping on, and checkpoints the same record."""
    if mesh.dp == 1:
        return record
    keys = [k for k, v in record.items() if isinstance(v, int | float) and k != "iteration"]
    values = torch.tensor([float(record[k]) for k in keys], dtype=torch.float64, device=mesh.device)
    dist.all_reduce(values, group=mesh.group("dp"))
    out = dict(record)
    for key, total in zip(keys, values.tolist(), strict=True):
        out[key] = total if key == "sequence_tokens" else total / mesh.dp
    return out


def read_prompts(
    cfg: PpoConfig, tokenizer: Tokenizer, report: ReadReport
) -> tuple[list[list[int]], list[list[int]]]:
    """Chat prompts (every turn but the last assistant answer) as ids, split into train and held-out."""

    def parse(row: Mapping[str, Any]) -> list[int]:
        messages = check_messages(row.get("messages"))[:-1]
        ids = tokenizer.encode_chat(messages, add_generation_prompt=True).ids
        if len(ids) > cfg.max_prompt_len:
            raise Rejected("prompt longer than max_prompt_len", f"{len(ids)} > {cfg.max_prompt_len} tokens")
        return ids

    train, held_out = [], []
    for source in cfg.prompts:
        prompts = read_records(source.path, parse, cfg.bad_records, report=report, what="prompt")
        kept_out, rest = hold_out(prompts, cfg.held_out, cfg.seed)
        held_out.extend(kept_out)
        train.extend(rest)
    if not train:
        raise PpoSetupError("ppo.prompts: no usable prompt")
    return train, held_out


def tokenizer_digest(directory: str | Path) -> str:
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise PpoSetupError(f"{path}: missing; every PPO network directory carries its tokenizer")
    return hashlib.sha256(path.read_bytes()).hexdigest()


class PpoTask(Task):
    """PPO's learner as a trainer task: one step is one minibatch update of policy and value.

    At the first step of an iteration the task collects the iteration's rollouts (generated by
    the rollout backend while the previous iteration learned) and scores them; after its last
    minibatch it closes the iteration: the KL controller, validation, early stopping, and the
    new policy version for the rollout workers.
    """

    name = "ppo"
    adapters = True

    def __init__(self, cfg: PpoConfig):
        self.cfg = cfg
        self.iteration, self.version = 0, 0
        self.kl_coef = cfg.kl_coef
        self.max_lag = cfg.max_staleness if cfg.asynchronous else 0
        self.rollout_source: RolloutSource | None = None
        self.history: list[dict[str, float]] = []
        self.best_validation: float | None = None
        self.evals_without_best = 0
        self.stop_reason: str | None = None
        self.pending: list[Experience] = []
        self.exp: Experience | None = None
        self.clock = PhaseClock()
        self.epoch, self.mark = 0, 0.0  # the running minibatch's epoch; when its last phase ended

    def setup(self, trainer: Trainer) -> nn.Module:
        cfg = self.cfg
        self.trainer, self.mesh = trainer, trainer.mesh
        dp = self.mesh.dp
        for name in ("rollouts_per_iteration", "minibatch_size"):
            if getattr(cfg, name) % dp:
                raise PpoSetupError(f"ppo.{name}={getattr(cfg, name)} must split evenly over dp={dp} ranks")
        if dp > 1 and cfg.rollouts == "ray":
            raise PpoSetupError(
                "ppo.rollouts: ray runs with one learner process; under torchrun use the thread"
            )
        loaded = load_model(cfg.policy, trainable=True)
        self.tokenizer = loaded.tokenizer(cfg.chat)
        policy = loaded.model
        self.model_cfg = policy.cfg
        if cfg.max_prompt_len + cfg.max_new_tokens > policy.cfg.max_seq_len:
            raise PpoSetupError(
                f"ppo.max_prompt_len ({cfg.max_prompt_len}) + ppo.max_new_tokens ({cfg.max_new_tokens}) exceed "
                f"the policy's context of {policy.cfg.max_seq_len} tokens"
            )
        self.reward_fn, value = self._reward_and_value(policy)
        self.read_report = ReadReport()
        self.train_prompts, self.held_out = read_prompts(cfg, self.tokenizer, self.read_report)
        self.iterations = cfg.steps or 100
        self.minibatches = math.ceil(cfg.rollouts_per_iteration / cfg.minibatch_size)
        # With LoRA the value network gets adapters too, its head trains whole (as the reward model's did).
        self.policy = trainer.shard(add_adapters(policy, cfg.lora, cfg.seed))
        value = add_adapters(value, cfg.lora, cfg.seed + 1, trainable=("head",))
        self.value = shard_reward_model(value, trainer)
        # The frozen reference: with LoRA the policy itself with its adapters off, not a second copy.
        self.reference = self.policy if cfg.lora else trainer.frozen(load_model(cfg.policy).model)
        cache_tokens = (cfg.max_prompt_len + cfg.max_new_tokens) * min(cfg.rollouts_per_iteration, 64)
        self.engine_cfg = EngineConfig(
            num_blocks=max(64, cache_tokens // 16 + 1), max_running=64, seed=cfg.seed
        )
        self.sampling = SamplingParams(
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, tempered_logprobs=True
        )
        return nn.ModuleDict({"policy": self.policy, "value": self.value})

    @property
    def steps_per_iteration(self) -> int:
        return self.cfg.ppo_epochs * self.minibatches

    def total_steps(self) -> int:
        return self.iterations * self.steps_per_iteration

    def meta(self) -> dict[str, Any]:
        return {
            "model": self.model_cfg.model_dump(mode="json"),
            "tokenizer": str(Path(self.cfg.policy).resolve()),
            "weights_prefix": "policy.",
        }

    def _reward_and_value(self, policy: Transformer) -> tuple[Reward, RewardModel]:
        cfg = self.cfg
        needs_rm = cfg.reward == "model" or cfg.value_init == "reward_model"
        rm = stats = None
        if needs_rm:
            if tokenizer_digest(cfg.reward_model) != tokenizer_digest(cfg.policy):
                raise PpoSetupError(
                    f"ppo.reward_model {cfg.reward_model} and ppo.policy {cfg.policy} use different tokenizers"
                )
            rm, stats = load_reward_model(cfg.reward_model)
            if rm.backbone.cfg.vocab_size != policy.cfg.vocab_size:
                raise PpoSetupError("ppo.reward_model and ppo.policy have different vocabularies")
        if cfg.reward == "model":
            reward: Reward = ModelReward(self.trainer.frozen(copy.deepcopy(rm)), stats, self.tokenizer.pad_id)
        elif cfg.reward == "hangul":
            reward = HangulReward()
        else:
            reward = BrevityReward()
        if cfg.value_init == "reward_model":
            return reward, rm
        return reward, RewardModel(load_model(cfg.policy, trainable=True).model, seed=cfg.seed)

    # --- data ------------------------------------------------------------------------------
    def batch_prompts(self, batch: int) -> list[list[int]]:
        n = self.cfg.rollouts_per_iteration
        epoch, start = divmod(batch * n, len(self.train_prompts))
        order = list(range(len(self.train_prompts)))
        random.Random(self.cfg.seed + epoch).shuffle(order)
        picked = [order[(start + j) % len(order)] for j in range(n)]
        return [self.train_prompts[i] for i in picked]

    def batch_requests(self, batch: int) -> list[RolloutRequest]:
        """This rank's share of rollout batch ``batch``: its prompts, each with its own sampling seed
        (the seed of its place in the whole batch, so any number of ranks draws the same rollouts)."""
        return [
            (prompt, self.sampling.model_copy(update={"seed": rollout_seed(self.cfg.seed, batch, j)}))
            for j, prompt in enumerate(self.batch_prompts(batch))
            if j % self.mesh.dp == self.mesh.dp_rank
        ]

    def policy_weights(self) -> dict[str, Tensor]:
        """The policy's whole weights, for the rollout copies (every rank calls it: shards are gathered)."""
        if self.mesh.dp == 1:
            state = self.policy.state_dict()
        else:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(self.policy, options=StateDictOptions(full_state_dict=True))
        return merged_weights({canonical_name(k): v for k, v in state.items()}, self.cfg.lora)

    def rollouts(self) -> RolloutSource:
        """The rollout backend (``ppo.rollouts``), made once and kept across ``train`` calls."""
        if self.rollout_source is None:
            cfg = self.cfg
            if cfg.rollouts == "ray":
                from hcx.align.rollouts_ray import RayRollouts

                self.rollout_source = RayRollouts(
                    cfg.ray,
                    cfg.rollout_workers,
                    self.model_cfg,
                    self.policy_weights,
                    self.tokenizer,
                    self.engine_cfg,
                    self.batch_requests,
                    self.max_lag,
                )
            else:
                copy = (self.model_cfg, self.policy_weights, self.tokenizer, self.engine_cfg)
                on = {"device": self.trainer.device, "dtype": self.trainer.compute_dtype}
                if not cfg.asynchronous:
                    self.rollout_source = InlineRollouts(*copy, requests_for=self.batch_requests, **on)
                else:
                    self.rollout_source = ThreadRollouts(
                        *copy,
                        requests_for=self.batch_requests,
                        per_batch=cfg.rollouts_per_iteration // self.mesh.dp,
                        max_lag=self.max_lag,
                        threads=cfg.rollout_threads or max(1, torch.get_num_threads() // 2),
                        **on,
                    )
        return self.rollout_source

    def close(self) -> None:
        """Free the rollout workers (Ray actors); the trainer cannot train afterwards."""
        if self.rollout_source is not None:
            self.rollout_source.close()
            self.rollout_source = None

    def state_dict(self) -> dict[str, Any]:
        """PPO's own progress, as one JSON string: DCP stores it whatever its shape (lists, None)."""
        state = {
            "iteration": self.iteration,
            "kl_coef": self.kl_coef,
            "history": self.history,
            "best_validation": self.best_validation,
            "evals_without_best": self.evals_without_best,
        }
        return {"ppo": json.dumps(state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ppo_state = json.loads(state["ppo"])
        self.iteration = self.version = int(ppo_state["iteration"])
        self.kl_coef = float(ppo_state["kl_coef"])
        self.history = list(ppo_state["history"])
        self.best_validation = ppo_state["best_validation"]
        self.evals_without_best = int(ppo_state["evals_without_best"])

    # --- experience ------------------------------------------------------------------------
    def score(self, rollouts: list[Rollout]) -> torch.Tensor:
        sequences = [r.prompt_ids + r.response_ids for r in rollouts]
        scores = self.reward_fn(sequences, [r.text for r in rollouts])
        lengths = torch.tensor([len(r.response_ids) for r in rollouts], dtype=torch.float)
        return scores.float() - self.cfg.length_penalty * lengths

    def experience_from(self, rollouts: list[Rollout]) -> Experience:
        cfg = self.cfg
        reference = adapters_off(self.policy) if cfg.lora else contextlib.nullcontext()
        with self.trainer.autocast(), reference, self.clock.phase("scoring"):
            with self.clock.phase("reward"):
                scores = self.score(rollouts)
            return make_experience(
                rollouts,
                self.reference,
                self.value,
                scores,
                self.tokenizer.pad_id,
                self.kl_coef,
                cfg.gamma,
                cfg.lam,
                cfg.unlikelihood_ngram,
                self.version,
                cfg.temperature,
                self.clock,
            )

    def score_arrivals(self, pending: list[Rollout]) -> list[Experience]:
        """Experience of rollouts that arrived together, in forwards of similar-length sequences.

        Rollouts finish in order of response length but their prompts are of any length, so
        an arrival batch padded as one would be mostly padding; split into groups of similar
        length under ``forward_tokens`` (rows × longest) it is mostly tokens.
        """
        lengths = [len(r.prompt_ids) + len(r.response_ids) for r in pending]
        groups = similar_length_groups(lengths, self.cfg.forward_tokens)
        forwards = most_across_ranks(len(groups), self.mesh)  # agreed before any collective forward
        parts = [self.experience_from([pending[i] for i in group]) for group in groups]
        for _ in range(forwards - len(groups)):
            self.experience_from([pending[i] for i in groups[0]])  # keeps sharded forwards in step
        return parts

    def collect(self, rollouts: Iterable[Rollout]) -> Experience:
        """This iteration's experience, scored in batches of ``experience_batch`` as rollouts arrive.

        Synchronous PPO has nothing to overlap scoring with, so it scores all rollouts at once
        (fewer, larger forwards of similar-length groups). Under data parallel the sharded
        networks' forwards are collective, so every rank scores after all its rollouts arrived,
        in as many forwards as the rank that needs the most.
        """
        arrivals = self.timed_arrivals(rollouts)
        if self.mesh.dp > 1 or not self.cfg.asynchronous:
            return concat(self.score_arrivals(list(arrivals)))
        parts, pending = [], []
        for rollout in arrivals:
            pending.append(rollout)
            if len(pending) >= self.cfg.experience_batch:
                parts.extend(self.score_arrivals(pending))
                pending = []
        if pending:
            parts.extend(self.score_arrivals(pending))
        return concat(parts)

    def timed_arrivals(self, rollouts: Iterable[Rollout]) -> Iterator[Rollout]:
        """``rollouts``, the time spent waiting for each counted as the ``rollouts`` phase."""
        arrivals = iter(rollouts)
        while True:
            with self.clock.phase("rollouts"):
                rollout = next(arrivals, None)
            if rollout is None:
                return
            yield rollout

    # --- the trainer's hooks -----------------------------------------------------------------
    def next_batch(self) -> Experience | None:
        """The next minibatch; the iteration's experience is collected at its first step."""
        if not self.pending:
            if self.iteration >= self.iterations:
                return None
            self.started = time.perf_counter()
            self.clock.take()
            self.begin_iteration(self.collect(self.rollouts().rollouts(self.iteration)))
        batch = self.pending.pop(0)
        self.epoch = (self.steps_per_iteration - len(self.pending) - 1) // self.minibatches + 1
        self.mark = 0.0
        return batch

    def lap(self, phase: str) -> None:
        """Count the time since the last mark as ``phase`` of this minibatch's epoch."""
        now = time.perf_counter()
        if self.mark:
            self.clock.add(f"epoch {self.epoch} {phase}", now - self.mark)
        self.mark = now

    def begin_iteration(self, exp: Experience) -> None:
        """Whiten the advantages and lay out the iteration's minibatches (``ppo_epochs`` passes)."""
        self.exp = exp
        exp.advantages = whiten(exp.advantages, exp.mask, self.mesh.group("dp") if self.mesh.dp > 1 else None)
        self.totals = {"pg_loss": 0.0, "vf_loss": 0.0, "ul_loss": 0.0, "entropy": 0.0}
        generator = torch.Generator().manual_seed(self.cfg.seed + self.iteration)
        # Minibatches of similar lengths, in random order: padding costs as much as real tokens.
        by_length = exp.sequence_lengths.argsort()
        size = self.cfg.minibatch_size // self.mesh.dp  # this rank's part of each global minibatch
        groups = [by_length[i : i + size] for i in range(0, len(exp), size)]
        self.pending = [
            exp.select(groups[m])
            for _ in range(self.cfg.ppo_epochs)
            for m in torch.randperm(len(groups), generator=generator).tolist()
        ]

    def micro_batches(self, batch: Experience, count: int) -> list[tuple[Experience, dict[str, float]]]:
        """Similar-length chunks; under data parallel padded with zero-weight repeats to the count of
        the rank with the most, since every forward of a sharded network is collective."""
        chunks = list(self.chunks(batch))
        zero = {"pg_loss": 0.0, "vf_loss": 0.0, "entropy": 0.0, "ul_loss": 0.0}
        extra = most_across_ranks(len(chunks), self.mesh) - len(chunks)
        return chunks + [(chunks[0][0], zero)] * extra

    def loss(self, module: nn.Module, micro: tuple[Experience, dict[str, float]], share: float) -> MicroLoss:
        self.lap("backward")  # the previous micro-batch's (at the first: starts the clock)
        loss = self.micro_loss(micro)
        self.lap("forward")
        return loss

    def before_optimizer_step(self) -> None:
        self.lap("backward")

    def micro_loss(self, micro: tuple[Experience, dict[str, float]]) -> MicroLoss:
        chunk, shares = micro
        weighted = {k: v * shares[k] for k, v in self.loss_terms(chunk).items()}
        for key, value in weighted.items():
            self.totals[key] += float(value.detach()) / self.steps_per_iteration
        cfg = self.cfg
        loss = (
            weighted["pg_loss"]
            + cfg.value_coef * weighted["vf_loss"]
            + cfg.unlikelihood_weight * weighted["ul_loss"]
            - cfg.entropy_coef * weighted["entropy"]
        )
        padding = not any(shares.values())  # a zero-weight repeat that keeps sharded forwards in step
        return MicroLoss(loss, 0 if padding else int(chunk.mask.sum()))

    def end_step(self, step: int) -> dict[str, Any] | None:
        """After an iteration's last minibatch: its record, the KL controller, validation, stopping."""
        self.lap("optimizer")
        if self.pending:
            return None
        exp = self.exp
        record = self.iteration_record(exp, dict(self.totals), 0.0)
        if self.mesh.dp > 1:
            record = mean_across_ranks(record, self.mesh)
        self.iteration += 1
        self.version += 1
        with self.clock.phase("publish"):
            self.rollouts().publish(self.version)
        self.update_kl_coef(record["kl"])
        if self.iteration % self.cfg.eval_every == 0 or self.iteration == self.iterations:
            with self.clock.phase("validation"):
                record["validation_reward"] = self.validation_reward()
        record["seconds"] = time.perf_counter() - self.started
        record["phases"] = self.clock.take()
        self.stop_reason = self.early_stop_reason(record)
        self.history.append(record)
        if self.stop_reason:
            self.trainer.log_event(
                {"event": "early_stop", "iteration": self.iteration, "reason": self.stop_reason}
            )
        return record

    def checkpoint_due(self, step: int, every: int, total: int) -> bool:
        """Only between iterations (the experience in flight is not saved); ``every`` counts iterations."""
        boundary = not self.pending
        return boundary and (self.iteration % every == 0 or self.iteration == self.iterations)

    def evaluation_due(self, step: int, every: int, total: int) -> bool:
        """After an iteration whose validation reward is measured (``eval_every`` counts iterations)."""
        return not self.pending and (
            self.iteration % self.cfg.eval_every == 0 or self.iteration == self.iterations
        )

    def language_model(self) -> tuple[nn.Module, Any]:
        return self.policy, self.tokenizer

    def should_stop(self) -> bool:
        return self.stop_reason is not None

    def chunks(self, minibatch: Experience) -> Iterator[tuple[Experience, dict[str, float]]]:
        """The minibatch in forwards of similar-length rows (``forward_tokens``), each with its shares.

        Every loss is a mean over tokens (unlikelihood: over repeated tokens), so weighting a
        chunk's means by its share of those tokens makes the accumulated gradient the whole
        minibatch's, while the long tail of prompt lengths is not padded into the short rows.
        """
        groups = similar_length_groups(minibatch.sequence_lengths.tolist(), self.cfg.forward_tokens)
        tokens, repeated = float(minibatch.mask.sum()), float(minibatch.repeated.sum())
        for group in groups:
            chunk = minibatch.select(torch.tensor(group))
            token_share = float(chunk.mask.sum()) / max(tokens, 1.0)
            repeated_share = float(chunk.repeated.sum()) / repeated if repeated else 0.0
            yield (
                chunk,
                {
                    "pg_loss": token_share,
                    "vf_loss": token_share,
                    "entropy": token_share,
                    "ul_loss": repeated_share,
                },
            )

    def loss_terms(self, mb: Experience) -> dict[str, Tensor]:
        """PPO's policy and value losses, unlikelihood and entropy of one forward, each a token mean."""
        cfg = self.cfg
        with self.trainer.autocast():
            logits = response_logits(self.policy, mb.tokens, mb.index, cfg.temperature, mb.mask)
            logprobs, entropies = token_logprobs_and_entropy(
                logits, mb.tokens, mb.index, entropy_grad=cfg.entropy_coef > 0, mask=mb.mask
            )
            values = response_values(self.value, mb.tokens, mb.index)
        return {
            "pg_loss": ppo_policy_loss(logprobs, mb.old_logprobs, mb.advantages, mb.mask, cfg.clip),
            "vf_loss": value_loss(values, mb.values, mb.returns, mb.mask, cfg.value_clip),
            "ul_loss": unlikelihood_loss(logprobs, mb.repeated),
            "entropy": masked_mean(entropies, mb.mask),
        }

    def update_kl_coef(self, kl: float) -> None:
        """Adaptive KL controller (Ziegler et al. 2019): move β toward the target KL."""
        if self.cfg.adaptive_kl:
            error = max(-0.2, min(0.2, kl / self.cfg.target_kl - 1))
            self.kl_coef *= 1 + error * self.cfg.rollouts_per_iteration / self.cfg.kl_horizon

    @torch.no_grad()
    def validation_reward(self) -> float:
        if not self.held_out:
            return float("nan")
        model = self.policy if self.mesh.dp == 1 else self.rollouts().copy
        engine = Engine(model, self.tokenizer, self.engine_cfg)
        params = SamplingParams(max_new_tokens=self.cfg.max_new_tokens, temperature=0.0)
        mine = self.held_out[self.mesh.dp_rank :: self.mesh.dp] or self.held_out[:1]
        completions = engine.generate(mine, params)
        rollouts = [Rollout(c.prompt_ids, c.token_ids, c.logprobs, c.text, self.version) for c in completions]
        return mean_across_ranks({"reward": float(self.score(rollouts).mean())}, self.mesh)["reward"]

    def early_stop_reason(self, record: dict[str, float]) -> str | None:
        rules = self.cfg.early_stop
        if rules.max_kl is not None and record["kl"] > rules.max_kl:
            return f"KL to the reference {record['kl']:.2f} > {rules.max_kl}"
        first_length = self.history[0]["length"] if self.history else record["length"]
        drift = abs(record["length"] - first_length) / max(first_length, 1.0)
        if rules.max_length_drift is not None and drift > rules.max_length_drift:
            return f"mean response length drifted {drift:.0%} from {first_length:.1f} tokens"
        if "validation_reward" in record and rules.patience is not None:
            value = record["validation_reward"]
            if self.best_validation is None or value > self.best_validation + rules.min_delta:
                self.best_validation, self.evals_without_best = value, 0
            else:
                self.evals_without_best += 1
                if self.evals_without_best >= rules.patience:
                    return f"validation reward has not improved for {rules.patience} evaluations"
        return None

    def iteration_record(
        self, exp: Experience, learned: dict[str, float], seconds: float
    ) -> dict[str, float]:
        kl = ((exp.old_logprobs - exp.ref_logprobs) * exp.mask).sum(-1).mean()
        responses = exp.tokens[:, 1:].gather(1, exp.index)
        return {
            "iteration": self.iteration,
            "reward": float(exp.scores.mean()),
            "kl": float(kl),
            "kl_coef": self.kl_coef,
            "length": float(exp.mask.sum(-1).mean()),
            "sequence_tokens": int(exp.sequence_lengths.sum()),
            "repeat_rate": repeat_rate(responses, exp.mask, self.cfg.unlikelihood_ngram),
            "staleness": float(exp.staleness.mean()),
            "max_staleness": float(exp.staleness.max()),
            "rollout_workers": float(exp.workers.unique().numel()),
            "seconds": seconds,
            **learned,
        }


class PpoTrainer(Trainer):
    """The trainer on the PPO task: rollouts run beside it, iterations are counted in steps."""

    def __init__(self, cfg: PpoConfig, on_checkpoint: Callable[[CheckpointSaved], None] | None = None):
        task = PpoTask(cfg)
        super().__init__(cfg, task, on_checkpoint)
        self.ppo: PpoTask = task

    def train(self, max_steps: int | None = None) -> TrainResult:
        """Run PPO iterations (``max_steps`` more at most) until done or an early-stopping rule fires."""
        self.resume()
        task = self.ppo
        rollouts = task.rollouts()
        rollouts.start(first_batch=task.iteration, version=task.version)
        try:
            more = None if max_steps is None else max_steps * task.steps_per_iteration
            result = self.fit(more)
        finally:
            rollouts.stop()
        self.close_log()
        result.step = task.iteration
        return result

    def close(self) -> None:
        self.ppo.close()

    def learn(self, exp: Experience) -> dict[str, float]:
        """One iteration's updates on given experience, without rollouts (for tests and benchmarks)."""
        self.ppo.begin_iteration(exp)
        while self.ppo.pending:
            self.train_step(self.ppo.pending.pop(0))
        return dict(self.ppo.totals)

    def export(self) -> Path | None:
        model = self.full_model(self.ppo.model_cfg, prefix="policy.")
        if model is None:
            return None
        out = export_hf(model, Path(self.cfg.export_hf or self.out / "hf"), self.cfg.policy)
        keep_chat_tokens(self.ppo.tokenizer, out)
        return out


def ppo(cfg: PpoConfig, on_checkpoint: Callable[[CheckpointSaved], None] | None = None) -> TrainResult:
    trainer = PpoTrainer(cfg, on_checkpoint)
    try:
        result = trainer.train()
    finally:
        trainer.close()
    finished = trainer.ppo.iteration == trainer.ppo.iterations or trainer.ppo.stop_reason is not None
    hf_dir = trainer.export() if finished else None
    history = trainer.ppo.history
    result.metrics = {
        "iterations": trainer.ppo.iteration,
        "stop_reason": trainer.ppo.stop_reason,
        "first": history[0] if history else None,
        "last": history[-1] if history else None,
        "skipped_prompts": trainer.ppo.read_report.as_dict(),
        "hf_dir": str(hf_dir) if hf_dir else None,
    }
    (trainer.out / "ppo_summary.json").write_text(json.dumps(result.metrics, indent=1, ensure_ascii=False))
    return result
