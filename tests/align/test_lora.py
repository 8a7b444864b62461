"""LoRA adapters for SFT, the reward model and PPO (hcx.train.lora): only adapters (and heads) learn,
exports are merged plain models, PPO's reference is the policy with its adapters off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from hcx.align.config import SftConfig
from hcx.align.experience import Rollout, response_logits, token_logprobs
from hcx.align.ppo import PpoTrainer
from hcx.align.reward_model import load_reward_model
from hcx.align.rm import collate_groups, train_reward_model
from hcx.align.sft import SftTrainer
from hcx.infer.engine import Engine
from hcx.infer.sampling import SamplingParams
from hcx.model.load import load_model
from hcx.model.lora import merge_lora
from hcx.model.transformer import canonical_name
from hcx.train.checkpoint import CheckpointError
from hcx.train.config import LoopConfig, LoraConfig
from hcx.train.lora import adapters_off
from hcx.train.trainer import Task, Trainer
from tests.align.test_ppo import ppo_config
from tests.align.test_rm import repeated_sentence_pairs, rm_config
from tests.align.test_sft import sft_config
from tests.train.test_distributed import _free_port, as_torchrun_rank

LORA = {"rank": 8, "alpha": 16.0}


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def plain_name(name: str) -> str:
    return canonical_name(name).replace(".base_layer.", ".")


def sample_tokens(trainer: SftTrainer, rows: int = 4) -> torch.Tensor:
    batch = trainer.task.batches[0]
    return batch.inputs[:rows]


def test_merge_lora_by_hand() -> None:
    """W + (alpha / rank) · B A under the plain name; untouched weights pass through."""
    state = {
        "layers.0.attention.wq.base_layer.weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        "layers.0.attention.wq.lora_A.default.weight": torch.tensor([[1.0, 2.0]]),  # rank 1 × in 2
        "layers.0.attention.wq.lora_B.default.weight": torch.tensor([[3.0], [-1.0]]),  # out 2 × rank 1
        "norm.weight": torch.tensor([5.0, 6.0]),
    }
    merged = merge_lora(state, scaling=0.5)
    assert set(merged) == {"layers.0.attention.wq.weight", "norm.weight"}
    # B A = [[3, 6], [-1, -2]]; half of it added to the identity
    assert merged["layers.0.attention.wq.weight"].tolist() == [[2.5, 3.0], [-0.5, 0.0]]
    assert merged["norm.weight"].tolist() == [5.0, 6.0]


def test_lora_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown target module"):
        LoraConfig(target_modules=["q_proj"])
    with pytest.raises(ValueError, match=r"parallel\.tp and parallel\.pp must be 1"):
        SftConfig.model_validate({"lora": {}, "parallel": {"tp": 2}})
    with pytest.raises(ValueError, match=r"train\.lora: this stage trains every weight"):
        Trainer(LoopConfig(lora=LoraConfig(), device="cpu"), Task())  # a task without adapters


def test_sft_trains_only_the_adapters_and_exports_the_merged_model(
    base_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    cfg = sft_config(
        base_model_dir, data_dir, tmp_path / "sft", steps=6, max_samples=200, held_out=10, lora=LORA
    )
    trainer = SftTrainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.module.named_parameters()}
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for n, p in trainer.module.named_parameters() if is_adapter(n)}
    trainer.train()

    base = load_model(base_model_dir).model.state_dict()
    adapted = 0
    for name, param in trainer.module.named_parameters():
        if is_adapter(name):
            assert not torch.equal(param, before[name]), f"{name} did not train"
            adapted += "lora_A" in name
        else:
            assert torch.equal(param, before[name]), f"{name} changed"
            assert torch.equal(param, base[plain_name(name)]), name
    assert adapted == 2 * 7  # wq wk wv wo w1 w2 w3 in each of the 2 layers

    hf_dir = trainer.export()
    weights = load_file(hf_dir / "model.safetensors")
    assert not any("lora" in k or "base_layer" in k for k in weights)
    merged = load_model(hf_dir).model
    tokens = sample_tokens(trainer)
    with torch.no_grad():
        want = trainer.module(tokens)
        got = merged(tokens)
        plain = load_model(base_model_dir).model(tokens)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (plain - want).abs().max() > 1e-2  # the adapters did change the model

    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=tokens).logits, want, rtol=1e-4, atol=1e-4)


def test_lora_resume_is_exact_and_checkpoints_load_merged(
    base_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    settings = {"steps": 6, "max_samples": 120, "checkpoint": {"every": 3}, "log_every": 1, "lora": LORA}
    straight = SftTrainer(sft_config(base_model_dir, data_dir, tmp_path / "a", **settings)).train()
    first = SftTrainer(sft_config(base_model_dir, data_dir, tmp_path / "b", **settings))
    assert first.train(max_steps=3).step == 3

    # The checkpoint (base + adapters under PEFT's names) loads as the merged plain model.
    loaded = load_model(tmp_path / "b")
    assert loaded.kind == "checkpoint"
    tokens = sample_tokens(first)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(tokens), first.module(tokens), rtol=1e-4, atol=1e-4)

    resumed = SftTrainer(sft_config(base_model_dir, data_dir, tmp_path / "b", **settings)).train()
    assert resumed.losses == pytest.approx(straight.losses, abs=1e-6)

    other = {**settings, "lora": {**LORA, "rank": 4}}
    with pytest.raises(CheckpointError, match="lora"):
        SftTrainer(sft_config(base_model_dir, data_dir, tmp_path / "b", **other)).train()


def test_rm_with_lora_learns_and_exports_a_merged_reward_model(
    base_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    source = repeated_sentence_pairs(data_dir, tmp_path / "pairs.jsonl", 420)
    cfg = rm_config(base_model_dir, source, tmp_path / "rm", lora=LORA, optim={"lr": 1e-2, "warmup_steps": 3})
    result = train_reward_model(cfg)
    before, after = (
        result.metrics["held_out_accuracy_before"]["ko"],
        result.metrics["held_out_accuracy"]["ko"],
    )
    assert after >= 0.9 and after > before
    log = [json.loads(line) for line in (tmp_path / "rm" / "train_log.jsonl").read_text().splitlines()]
    start = next(r for r in log if r.get("event") == "start")
    assert start["trainable_params"] < start["params"] / 5  # adapters and the head only

    export = Path(result.metrics["export_dir"])
    rm, _ = load_reward_model(export)
    base = load_model(base_model_dir).model.state_dict()
    assert torch.equal(rm.backbone.state_dict()["norm.weight"], base["norm.weight"])  # frozen
    assert not torch.equal(
        rm.backbone.state_dict()["layers.0.attention.wq.weight"], base["layers.0.attention.wq.weight"]
    )
    from hcx.align.preferences import read_preferences
    from hcx.tokenizer import load

    tokenizer = load(export)
    tokens, lengths, _, _ = collate_groups(
        read_preferences(source, tokenizer, max_len=256, limit=4), tokenizer.pad_id
    )
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(export).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            hf(input_ids=tokens).logits.squeeze(-1), rm.eval()(tokens, lengths), atol=1e-4, rtol=1e-4
        )


def test_ppo_with_lora_references_the_base_and_rolls_out_merged_weights(
    policy_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    cfg = ppo_config(
        policy_dir,
        data_dir,
        tmp_path / "ppo",
        steps=2,
        rollouts_per_iteration=16,
        minibatch_size=8,
        max_new_tokens=16,
        asynchronous=False,
        lora=LORA,
        optim={"lr": 1e-2, "warmup_steps": 1},
    )
    trainer = PpoTrainer(cfg)
    task = trainer.ppo
    assert task.reference is task.policy  # no second copy of the policy
    trainable = {n for n, p in trainer.module.named_parameters() if p.requires_grad}
    assert trainable and all(is_adapter(n) or n == "value.head.weight" for n in trainable)
    assert "value.head.weight" in trainable
    trainer.train()
    copy = task.rollouts().copy  # the rollout engine's, published after the last update
    trainer.close()
    assert len(task.history) == 2

    # Experience now: the reference's log-probs are exactly the SFT model's, the policy's are not.
    engine = Engine(task.policy, task.tokenizer)
    params = SamplingParams(max_new_tokens=16, temperature=0.0)
    rollouts = [
        Rollout(c.prompt_ids, c.token_ids, c.logprobs, c.text, task.version)
        for c in engine.generate(task.train_prompts[:6], params)
    ]
    exp = task.experience_from(rollouts)
    base = load_model(policy_dir).model
    with torch.no_grad():
        want = token_logprobs(response_logits(base, exp.tokens, exp.index), exp.tokens, exp.index) * exp.mask
        policy = token_logprobs(response_logits(task.policy, exp.tokens, exp.index), exp.tokens, exp.index)
        with adapters_off(task.policy):
            off = token_logprobs(response_logits(task.policy, exp.tokens, exp.index), exp.tokens, exp.index)
    assert torch.equal(exp.ref_logprobs, want)
    assert torch.equal(off * exp.mask, want)
    assert float(((policy - off) * exp.mask).abs().max()) > 1e-3  # the adapters moved the policy

    # The rollout engine's copy holds the merged weights: it computes what the adapted policy computes.
    assert not any("lora" in k for k in copy.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(copy(exp.tokens), task.policy(exp.tokens), rtol=1e-4, atol=1e-4)
        exported = load_model(trainer.export()).model
        torch.testing.assert_close(exported(exp.tokens), task.policy(exp.tokens), rtol=1e-4, atol=1e-4)


def _lora_rank_main(rank: int, world: int, port: int, config: dict, result_path: str) -> None:
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    as_torchrun_rank(rank, world, port)
    try:
        trainer = SftTrainer(SftConfig.model_validate(config))
        sharded = all(isinstance(p, DTensor) for p in trainer.module.parameters())
        result = trainer.train()
        exported = trainer.export()
        if rank == 0:
            report = {"losses": result.losses, "hf": str(exported), "sharded": sharded}
            Path(result_path).write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def test_lora_sft_under_fsdp2(base_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """Two gloo ranks, FSDP2 over the adapted model: base weights stay as they were, adapters train and
    the export is merged."""
    settings = {"steps": 4, "max_samples": 200, "held_out": 10, "checkpoint": {"every": 4}, "lora": LORA}
    cfg = sft_config(base_model_dir, data_dir, tmp_path / "fsdp", parallel={"dp": 2}, **settings)
    Path(cfg.output_dir).mkdir(parents=True)
    result_path = Path(cfg.output_dir) / "result.json"
    mp.spawn(
        _lora_rank_main,
        args=(2, _free_port(), cfg.model_dump(mode="json"), str(result_path)),
        nprocs=2,
        join=True,
    )
    result = json.loads(result_path.read_text())
    assert result["sharded"] and len(result["losses"]) == 4
    exported = load_model(result["hf"]).model.state_dict()
    base = load_model(base_model_dir).model.state_dict()
    for name, weight in base.items():
        adapted = name.endswith(tuple(f"{t}.weight" for t in LoraConfig().target_modules))
        assert torch.equal(exported[name], weight) != adapted, name
    # the checkpoint saved under FSDP2 loads merged as well
    assert torch.equal(
        load_model(tmp_path / "fsdp").model.state_dict()["layers.1.feed_forward.w2.weight"],
        exported["layers.1.feed_forward.w2.weight"],
    )
