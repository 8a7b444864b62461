"""PPO with the four networks (SPEC §5.3): ``hcx ppo RECIPE``.

- **policy** and frozen **reference**: the post-SFT model;
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
from hcx.align.reward_model import RewardModel, load_reward_model
from hcx.align.rewards import BrevityReward, HangulReward, ModelReward, Reward
from hcx.align.rollouts import RolloutRequest, RolloutSource, ThreadRollouts, rollout_seed
from hcx.model import Transformer
from hcx.model.hf import export_hf, import_hf
from hcx.records import ReadReport, Rejected, hold_out, read_records
from hcx.serve.config import EngineConfig
from hcx.serve.engine import Engine
from hcx.serve.sampling import SamplingParams
from hcx.tokenizer import HcxTokenizer, load
from hcx.train.checkpoint import CheckpointSaved
from hcx.train.loop import Trainer, TrainResult, is_rank0
from hcx.train.metrics import MetricsLog


class PpoSetupError(ValueError):
    """PPO cannot start with these inputs; raised before any rollout."""


def read_prompts(
    cfg: PpoConfig, tokenizer: HcxTokenizer, report: ReadReport
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


class PpoTrainer(Trainer):
    stage = "ppo"

    def __init__(self, cfg: PpoConfig, on_checkpoint: Callable[[CheckpointSaved], None] | None = None):
        super().__init__(cfg, on_checkpoint)
        self.cfg: PpoConfig = cfg
        self.tokenizer = load(cfg.policy)
        policy = import_hf(cfg.policy)
        self.model_cfg, self.rope_base = policy.cfg, policy.rope_base
        if cfg.max_prompt_len + cfg.max_new_tokens > policy.cfg.max_seq_len:
            raise PpoSetupError(
                f"ppo.max_prompt_len ({cfg.max_prompt_len}) + ppo.max_new_tokens ({cfg.max_new_tokens}) exceed "
                f"the policy's context of {policy.cfg.max_seq_len} tokens"
            )
        self.reference = import_hf(cfg.policy).eval().requires_grad_(False)
        self.reward_fn, value = self._reward_and_value(policy)
        self.read_report = ReadReport()
        self.train_prompts, self.held_out = read_prompts(cfg, self.tokenizer, self.read_report)

        iterations = cfg.steps or 100
        minibatches = math.ceil(cfg.rollouts_per_iteration / cfg.minibatch_size)
        self.attach(
            nn.ModuleDict({"policy": policy, "value": value}),
            iterations * cfg.ppo_epochs * minibatches,
            {
                "model": policy.cfg.model_dump(mode="json"),
                "tokenizer": str(Path(cfg.policy).resolve()),
                "rope_base": policy.rope_base,
                "weights_prefix": "policy.",
            },
        )
        self.iterations = iterations
        self.policy, self.value = policy, value
        cache_tokens = (cfg.max_prompt_len + cfg.max_new_tokens) * min(cfg.rollouts_per_iteration, 64)
        self.engine_cfg = EngineConfig(
            num_blocks=max(64, cache_tokens // 16 + 1), max_running=64, seed=cfg.seed
        )
        self.sampling = SamplingParams(
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, tempered_logprobs=True
        )
        self.iteration, self.version = 0, 0
        self.kl_coef = cfg.kl_coef
        self.max_lag = cfg.max_staleness if cfg.asynchronous else 0
        self.rollout_source: RolloutSource | None = None
        self.history: list[dict[str, float]] = []
        self.best_validation: float | None = None
        self.evals_without_best = 0
        self.stop_reason: str | None = None

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
            reward: Reward = ModelReward(
                copy.deepcopy(rm).requires_grad_(False), stats, self.tokenizer.pad_id
            )
        elif cfg.reward == "hangul":
            reward = HangulReward()
        else:
            reward = BrevityReward()
        value = rm if cfg.value_init == "reward_model" else RewardModel(import_hf(cfg.policy), seed=cfg.seed)
        return reward, value.train()

    # --- data ------------------------------------------------------------------------------
    def batch_prompts(self, batch: int) -> list[list[int]]:
        n = self.cfg.rollouts_per_iteration
        epoch, start = divmod(batch * n, len(self.train_prompts))
        order = list(range(len(self.train_prompts)))
        random.Random(self.cfg.seed + epoch).shuffle(order)
        picked = [order[(start + j) % len(order)] for j in range(n)]
        return [self.train_prompts[i] for i in picked]

    def batch_requests(self, batch: int) -> list[RolloutRequest]:
        """Rollout batch ``batch``: its prompts, each with its own sampling seed."""
        return [
            (prompt, self.sampling.model_copy(update={"seed": rollout_seed(self.cfg.seed, batch, j)}))
            for j, prompt in enumerate(self.batch_prompts(batch))
        ]

    def rollouts(self) -> RolloutSource:
        """The rollout backend (``ppo.rollouts``), made once and kept across ``train`` calls."""
        if self.rollout_source is None:
            cfg = self.cfg
            if cfg.rollouts == "ray":
                from hcx.align.rollouts_ray import RayRollouts

                self.rollout_source = RayRollouts(
                    cfg.ray,
                    cfg.rollout_workers,
                    self.policy,
                    self.tokenizer,
                    self.engine_cfg,
                    self.batch_requests,
                    self.max_lag,
                )
            else:
                self.rollout_source = ThreadRollouts(
                    self.policy,
                    self.tokenizer,
                    self.engine_cfg,
                    self.batch_requests,
                    cfg.rollouts_per_iteration,
                    self.max_lag,
                )
        return self.rollout_source

    def close(self) -> None:
        """Free the rollout workers (Ray actors); the trainer cannot train afterwards."""
        if self.rollout_source is not None:
            self.rollout_source.close()
            self.rollout_source = None

    def data_state(self) -> dict[str, Any]:
        """PPO's own progress, as one JSON string: DCP stores it whatever its shape (lists, None)."""
        state = {
            "iteration": self.iteration,
            "kl_coef": self.kl_coef,
            "history": self.history,
            "best_validation": self.best_validation,
            "evals_without_best": self.evals_without_best,
        }
        return {"ppo": json.dumps(state)}

    def load_data_state(self, state: dict[str, Any]) -> None:
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
        return make_experience(
            rollouts,
            self.reference,
            self.value,
            self.score(rollouts),
            self.tokenizer.pad_id,
            self.kl_coef,
            cfg.gamma,
            cfg.lam,
            cfg.unlikelihood_ngram,
            self.version,
            cfg.temperature,
        )

    def score_arrivals(self, pending: list[Rollout]) -> list[Experience]:
        """Experience of rollouts that arrived together, in forwards of similar-length sequences.

        Rollouts finish in order of response length but their prompts are of any length, so
        an arrival batch padded as one would be mostly padding; split into groups of similar
        length under ``forward_tokens`` (rows × longest) it is mostly tokens.
        """
        lengths = [len(r.prompt_ids) + len(r.response_ids) for r in pending]
        groups = similar_length_groups(lengths, self.cfg.forward_tokens)
        return [self.experience_from([pending[i] for i in group]) for group in groups]

    def collect(self, rollouts: Iterable[Rollout]) -> Experience:
        """This iteration's experience, scored in batches of ``experience_batch`` as rollouts arrive."""
        parts, pending = [], []
        for rollout in rollouts:
            pending.append(rollout)
            if len(pending) >= self.cfg.experience_batch:
                parts.extend(self.score_arrivals(pending))
                pending = []
        if pending:
            parts.extend(self.score_arrivals(pending))
        return concat(parts)

    # --- learning --------------------------------------------------------------------------
    def learn(self, exp: Experience) -> dict[str, float]:
        cfg = self.cfg
        exp.advantages = whiten(exp.advantages, exp.mask)
        totals: dict[str, float] = {"pg_loss": 0.0, "vf_loss": 0.0, "ul_loss": 0.0, "entropy": 0.0}
        steps = 0
        generator = torch.Generator().manual_seed(cfg.seed + self.iteration)
        # Minibatches of similar lengths, in random order: padding costs as much as real tokens.
        by_length = exp.sequence_lengths.argsort()
        minibatches = [by_length[i : i + cfg.minibatch_size] for i in range(0, len(exp), cfg.minibatch_size)]
        for _ in range(cfg.ppo_epochs):
            for m in torch.randperm(len(minibatches), generator=generator).tolist():
                minibatch = exp.select(minibatches[m])
                self.optimizer.zero_grad(set_to_none=True)
                for chunk, shares in self.chunks(minibatch):
                    weighted = {k: v * shares[k] for k, v in self.loss_terms(chunk).items()}
                    loss = (
                        weighted["pg_loss"]
                        + cfg.value_coef * weighted["vf_loss"]
                        + cfg.unlikelihood_weight * weighted["ul_loss"]
                        - cfg.entropy_coef * weighted["entropy"]
                    )
                    loss.backward()
                    for key, value in weighted.items():
                        totals[key] += value.detach().item()
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), cfg.optim.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                steps += 1
        return {k: v / steps for k, v in totals.items()}

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
        with self.autocast():
            logits = response_logits(self.policy, mb.tokens, mb.index, cfg.temperature)
            logprobs, entropies = token_logprobs_and_entropy(
                logits, mb.tokens, mb.index, entropy_grad=cfg.entropy_coef > 0
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
        engine = Engine(self.policy, self.tokenizer, self.engine_cfg)
        params = SamplingParams(max_new_tokens=self.cfg.max_new_tokens, temperature=0.0)
        completions = engine.generate(self.held_out, params)
        rollouts = [Rollout(c.prompt_ids, c.token_ids, c.logprobs, c.text, self.version) for c in completions]
        return float(self.score(rollouts).mean())

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

    def train(self, max_steps: int | None = None) -> TrainResult:
        """Run PPO iterations (``max_steps`` more at most) until done or an early-stopping rule fires."""
        if self.cfg.resume:
            self.resume()
        stop = self.iterations if max_steps is None else min(self.iterations, self.iteration + max_steps)
        log = MetricsLog(self.out, self.iterations, self.iteration, enabled=is_rank0(), desc=self.stage)
        rollouts = self.rollouts()
        rollouts.start(first_batch=self.iteration, version=self.version)
        try:
            while self.iteration < stop:
                started = time.perf_counter()
                exp = self.collect(rollouts.rollouts(self.iteration))
                learned = self.learn(exp)
                record = self.iteration_record(exp, learned, 0.0)
                self.iteration += 1
                self.version += 1
                rollouts.publish(self.version)
                self.update_kl_coef(record["kl"])
                if self.iteration % self.cfg.eval_every == 0 or self.iteration == stop:
                    record["validation_reward"] = self.validation_reward()
                record["seconds"] = time.perf_counter() - started
                self.stop_reason = self.early_stop_reason(record)
                self.history.append(record)
                self.step, self.losses = self.iteration, [*self.losses, record["pg_loss"]]
                self.tokens_seen += int(exp.mask.sum())
                log.log(
                    {
                        "step": self.iteration,
                        "loss": record["pg_loss"],
                        "lr": self.scheduler.get_last_lr()[0],
                        **record,
                    }
                )
                log.advance()
                if (
                    self.iteration % self.cfg.checkpoint.every == 0
                    or self.iteration == self.iterations
                    or self.stop_reason
                ):
                    self.save()
                if self.stop_reason:
                    log.log({"event": "early_stop", "iteration": self.iteration, "reason": self.stop_reason})
                    break
        finally:
            rollouts.stop()
        self.checkpointer.wait()
        log.close()
        return TrainResult(self.iteration, self.tokens_seen, list(self.losses), self.out)

    def export(self) -> Path:
        model = Transformer(self.model_cfg)
        model.load_state_dict(self.policy.state_dict())
        model.set_rope_base(self.rope_base)
        return export_hf(model, Path(self.cfg.export_hf or self.out / "hf"), self.cfg.policy)


def ppo(cfg: PpoConfig, on_checkpoint: Callable[[CheckpointSaved], None] | None = None) -> TrainResult:
    trainer = PpoTrainer(cfg, on_checkpoint)
    try:
        result = trainer.train()
    finally:
        trainer.close()
    finished = trainer.iteration == trainer.iterations or trainer.stop_reason is not None
    hf_dir = trainer.export() if finished else None
    history = trainer.history
    result.metrics = {
        "iterations": trainer.iteration,
        "stop_reason": trainer.stop_reason,
        "first": history[0] if history else None,
        "last": history[-1] if history else None,
        "skipped_prompts": trainer.read_report.as_dict(),
        "hf_dir": str(hf_dir) if hf_dir else None,
    }
    (trainer.out / "ppo_summary.json").write_text(json.dumps(result.metrics, indent=1, ensure_ascii=False))
    return result
