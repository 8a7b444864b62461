from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from hcx.align.config import PpoConfig, RmConfig
from hcx.align.experience import Rollout, layout, response_logits, token_logprobs, token_logprobs_and_entropy
from hcx.align.losses import masked_mean
from hcx.align.ppo import PpoSetupError, PpoTrainer, ppo
from hcx.align.rm import train_reward_model
from hcx.infer.engine import Engine
from hcx.infer.sampling import SamplingParams
from hcx.model.load import load_model


def ppo_config(policy_dir: Path, data_dir: Path, out: Path, **overrides) -> PpoConfig:
    base = {
        "policy": str(policy_dir),
        "reward": "brevity",
        "value_init": "policy",
        "output_dir": str(out),
        "prompts": [{"path": str(data_dir / "sft" / "ko.jsonl.gz"), "language": "ko"}],
        "held_out": 8,
        "steps": 10,
        "rollouts_per_iteration": 32,
        "minibatch_size": 16,
        "max_new_tokens": 32,
        "dtype": "float32",
        "log_every": 1,
        "eval_every": 5,
        "optim": {"lr": 1e-3, "warmup_steps": 1, "weight_decay": 0.0},
        "checkpoint": {"every": 100},
        "early_stop": {"max_kl": None, "max_length_drift": None, "patience": None},
    }
    return PpoConfig.model_validate({**base, **overrides})


def mean(history: list[dict], key: str, rows: slice) -> float:
    values = [h[key] for h in history[rows]]
    return sum(values) / len(values)


def test_reward_rises_while_kl_stays_bounded(policy_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    result = ppo(ppo_config(policy_dir, data_dir, tmp_path / "ppo"))
    history = json.loads((tmp_path / "ppo" / "ppo_summary.json").read_text())
    assert history["iterations"] == 10 and history["stop_reason"] is None
    log = [json.loads(line) for line in (tmp_path / "ppo" / "train_log.jsonl").read_text().splitlines()]
    its = [r for r in log if "reward" in r]
    assert mean(its, "reward", slice(-3, None)) > mean(its, "reward", slice(0, 3)) + 0.01
    assert mean(its, "length", slice(-3, None)) < 0.85 * mean(its, "length", slice(0, 3))
    assert max(r["kl"] for r in its) < 20.0
    assert all(r["staleness"] <= 1 for r in its) and max(r["max_staleness"] for r in its) == 1
    assert Path(result.metrics["hf_dir"], "model.safetensors").is_file()
    # The policy's held-out bits per byte beside the validation reward, at the same iterations.
    evaluated = [r for r in log if "validation_reward" in r]
    assert len(evaluated) == 2  # eval_every 5 of 10 iterations
    assert all(0.5 < r["bpb/ko"] < 20 and r["bpb/en"] > 0 and r["bpb/code"] > 0 for r in evaluated)


def test_unlikelihood_lowers_the_probability_of_repeating(
    policy_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Same rollouts, same PPO updates, with and without the unlikelihood term.

    Greedy decoding without stop tokens makes the tiny policy loop, so its rollouts are full of
    repeated 4-grams; unlikelihood must lower the probability the policy gives those tokens.
    """
    repeated_p = {}
    for weight in (0.0, 1.0):
        trainer = PpoTrainer(
            ppo_config(policy_dir, data_dir, tmp_path / f"ul{weight}", unlikelihood_weight=weight)
        )
        engine = Engine(trainer.ppo.policy, trainer.ppo.tokenizer)
        params = SamplingParams(max_new_tokens=48, temperature=0.0, stop_token_ids=[])
        completions = engine.generate(trainer.ppo.train_prompts[:32], params)
        rollouts = [Rollout(c.prompt_ids, c.token_ids, c.logprobs, c.text, 0) for c in completions]
        exp = trainer.ppo.experience_from(rollouts)
        assert float(exp.repeated.sum() / exp.mask.sum()) > 0.2
        trainer.learn(exp)
        with torch.no_grad():
            logprobs = token_logprobs(
                response_logits(trainer.ppo.policy, exp.tokens, exp.index), exp.tokens, exp.index
            )
        repeated_p[weight] = float(masked_mean(logprobs.exp(), exp.repeated))
        before = float(masked_mean(exp.old_logprobs.exp(), exp.repeated))
    assert repeated_p[1.0] < 0.5 * repeated_p[0.0]
    assert repeated_p[1.0] < before


def test_tempered_rollouts_use_one_distribution_everywhere(
    policy_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """At temperature 0.5 the engine, the learner and the reference all score softmax(logits / 0.5).

    Before any update the policy is the behaviour policy and the reference, so the learner's
    ratio is 1 and the KL term 0; the model's own (untempered) log-probs are different.
    """
    trainer = PpoTrainer(
        ppo_config(policy_dir, data_dir, tmp_path / "t", temperature=0.5, rollouts_per_iteration=8)
    )
    rollouts = trainer.ppo.rollouts()
    rollouts.start(first_batch=0, version=0)
    try:
        exp = trainer.ppo.collect(rollouts.rollouts(0))
    finally:
        rollouts.stop()
    with torch.no_grad():
        tempered = token_logprobs(
            response_logits(trainer.ppo.policy, exp.tokens, exp.index, 0.5), exp.tokens, exp.index
        )
        untempered = token_logprobs(
            response_logits(trainer.ppo.policy, exp.tokens, exp.index), exp.tokens, exp.index
        )
    assert exp.mask.sum() > 8
    assert torch.allclose(tempered * exp.mask, exp.old_logprobs, atol=1e-4)
    assert torch.allclose(exp.ref_logprobs, exp.old_logprobs, atol=1e-4)
    assert float(((untempered - tempered) * exp.mask).abs().sum()) > 1.0


def test_chunked_minibatches_take_the_same_step_as_whole_ones(
    policy_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Accumulating a minibatch over similar-length chunks changes the padding, not the update."""
    settings = {"rollouts_per_iteration": 16, "ppo_epochs": 1, "unlikelihood_weight": 1.0}
    whole = PpoTrainer(ppo_config(policy_dir, data_dir, tmp_path / "w", forward_tokens=100_000, **settings))
    chunked = PpoTrainer(ppo_config(policy_dir, data_dir, tmp_path / "c", forward_tokens=64, **settings))
    engine = Engine(whole.ppo.policy, whole.ppo.tokenizer)
    params = SamplingParams(max_new_tokens=24, temperature=0.0, stop_token_ids=[])
    by_length = sorted(whole.ppo.train_prompts, key=len)
    prompts = by_length[:: len(by_length) // 16][:16]
    completions = engine.generate(prompts, params)
    exp = whole.ppo.experience_from(
        [Rollout(c.prompt_ids, c.token_ids, c.logprobs, c.text, 0) for c in completions]
    )
    assert exp.repeated.sum() > 0 and exp.sequence_lengths.max() > exp.sequence_lengths.min() + 10
    assert len(list(chunked.ppo.chunks(exp.select(torch.arange(16))))) > 2
    logged = [trainer.learn(copy.deepcopy(exp)) for trainer in (whole, chunked)]
    assert logged[0] == pytest.approx(logged[1], rel=1e-4, abs=1e-6)
    # One minibatch, so the gradients left after the step are that minibatch's, accumulated or not.
    # (Adam's first step is about lr·sign(gradient): parameters are the wrong thing to compare.)
    for (name, a), b in zip(whole.module.named_parameters(), chunked.module.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-6, msg=name)


def test_early_stopping_on_length_drift(policy_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    cfg = ppo_config(
        policy_dir, data_dir, tmp_path / "stop", early_stop={"max_length_drift": 0.15, "max_kl": None}
    )
    result = ppo(cfg)
    assert result.metrics["stop_reason"].startswith("mean response length drifted")
    assert result.metrics["iterations"] < 10
    assert result.metrics["hf_dir"] is not None


def test_ppo_from_a_reward_model(policy_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    rm = train_reward_model(
        RmConfig.model_validate(
            {
                "init": str(policy_dir),
                "output_dir": str(tmp_path / "rm"),
                "sources": [{"path": str(data_dir / "preference" / "ko.jsonl"), "language": "ko"}],
                "held_out": 20,
                "max_samples": 64,
                "max_len": 256,
                "dtype": "float32",
                "optim": {"lr": 1e-3, "warmup_steps": 1},
            }
        )
    )
    cfg = ppo_config(
        policy_dir, data_dir, tmp_path / "ppo", reward="model", value_init="reward_model", steps=2
    )
    cfg.reward_model = rm.metrics["export_dir"]
    result = ppo(cfg)
    assert result.metrics["iterations"] == 2
    assert abs(result.metrics["last"]["reward"]) <= 5.0  # normalised and clipped


def test_setup_errors_before_any_rollout(
    policy_dir: Path, data_dir: Path, tmp_path: Path, base_model_dir: Path
) -> None:
    with pytest.raises(PpoSetupError, match="exceed the policy's context"):
        PpoTrainer(ppo_config(policy_dir, data_dir, tmp_path / "a", max_prompt_len=500, max_new_tokens=100))
    with pytest.raises(FileNotFoundError, match="no normalisation statistics"):
        PpoTrainer(
            ppo_config(policy_dir, data_dir, tmp_path / "b", reward="model", reward_model=str(base_model_dir))
        )
    other = tmp_path / "other_tokenizer"
    shutil.copytree(policy_dir, other)
    (other / "tokenizer.json").write_text(
        json.dumps(json.loads((other / "tokenizer.json").read_text()), indent=2)
    )
    with pytest.raises(PpoSetupError, match="use different tokenizers"):
        PpoTrainer(ppo_config(policy_dir, data_dir, tmp_path / "c", reward="model", reward_model=str(other)))


def test_synchronous_ppo_resumes_exactly(policy_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """Rollouts use per-request seeds, so without asynchrony 2 + resume + 2 iterations equal 4 straight."""
    settings = {"steps": 4, "asynchronous": False, "checkpoint": {"every": 2}, "eval_every": 100}
    straight = PpoTrainer(ppo_config(policy_dir, data_dir, tmp_path / "a", **settings))
    straight.train()
    first = PpoTrainer(ppo_config(policy_dir, data_dir, tmp_path / "b", **settings))
    first.train(max_steps=2)
    resumed = PpoTrainer(ppo_config(policy_dir, data_dir, tmp_path / "b", **settings))
    resumed.train()
    keys = ("reward", "kl", "length", "pg_loss")
    assert len(resumed.ppo.history) == len(straight.ppo.history) == 4
    for got, want in zip(resumed.ppo.history, straight.ppo.history, strict=True):
        assert [got[k] for k in keys] == pytest.approx([want[k] for k in keys], rel=1e-5, abs=1e-7)


def test_one_log_softmax_gives_logprobs_and_entropy() -> None:
    logits = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(0), requires_grad=True)
    tokens = torch.randint(0, 11, (3, 9), generator=torch.Generator().manual_seed(1))
    index = torch.arange(2, 7).expand(3, -1)
    logprobs, entropy = token_logprobs_and_entropy(logits, tokens, index, entropy_grad=False)
    assert torch.allclose(logprobs, token_logprobs(logits, tokens, index))
    p = logits.softmax(-1)
    assert torch.allclose(entropy, -(p * p.log()).sum(-1), atol=1e-6)
    assert not entropy.requires_grad and logprobs.requires_grad
    (grad,) = torch.autograd.grad(
        token_logprobs_and_entropy(logits, tokens, index, entropy_grad=True)[1].sum(), logits
    )
    assert grad.abs().sum() > 0


def test_logprobs_at_real_tokens_only_equal_the_padded_ones(policy_dir: Path) -> None:
    """The LM head at the response mask's real tokens only: the same log-probabilities, entropies and
    gradients at those tokens as over the padded (B, R) layout, and zeros at the padding."""
    model = load_model(policy_dir, trainable=True).model
    generator = torch.Generator().manual_seed(0)
    rollouts = [
        Rollout(
            torch.randint(6, 500, (p,), generator=generator).tolist(),
            torch.randint(6, 500, (r,), generator=generator).tolist(),
            [0.0] * r,
            "",
            0,
        )
        for p, r in ((5, 12), (9, 3), (3, 1), (7, 7))
    ]
    tokens, index, mask = layout(rollouts, pad_id=1)
    outcomes = []
    for real_only in (None, mask):
        model.zero_grad()
        logits = response_logits(model, tokens, index, 0.7, real_only)
        logprobs, entropy = token_logprobs_and_entropy(
            logits, tokens, index, entropy_grad=True, mask=real_only
        )
        ((logprobs + entropy) * mask).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        outcomes.append((logprobs, entropy, grads))
    (padded_lp, padded_h, padded_grads), (lp, h, grads) = outcomes
    assert logits.shape == (int(mask.sum()), model.cfg.vocab_size)
    assert torch.allclose(lp, padded_lp * mask, rtol=1e-5, atol=1e-5)
    assert torch.allclose(h, padded_h * mask, rtol=1e-5, atol=1e-5)
    assert not lp[mask == 0].any() and not h[mask == 0].any()
    assert torch.allclose(grads, padded_grads, rtol=1e-4, atol=1e-6 * padded_grads.abs().max())
