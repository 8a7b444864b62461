"""SFT under torch.distributed (gloo, 2 processes): the same sharding as pretraining.

Tensor parallel ranks see the same batches, so TP=2 must reproduce one process's losses;
FSDP=2 ranks take different batches and must train and export a loadable model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from hcx.align.config import SftConfig
from hcx.align.ppo import PpoTrainer
from hcx.align.sft import SftTrainer
from hcx.model.hf import import_hf
from tests.align.test_sft import sft_config
from tests.train.test_distributed import _free_port, as_torchrun_rank


def _rank_main(rank: int, world: int, port: int, config: dict, result_path: str) -> None:
    import torch.distributed as dist

    as_torchrun_rank(rank, world, port)
    try:
        trainer = SftTrainer(SftConfig.model_validate(config))
        result = trainer.train()
        exported = trainer.export()
        if rank == 0:
            Path(result_path).write_text(json.dumps({"losses": result.losses, "hf": str(exported)}))
    finally:
        dist.destroy_process_group()


def run_two_ranks(cfg: SftConfig) -> dict:
    result_path = Path(cfg.output_dir) / "result.json"
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    mp.spawn(
        _rank_main, args=(2, _free_port(), cfg.model_dump(mode="json"), str(result_path)), nprocs=2, join=True
    )
    return json.loads(result_path.read_text())


@pytest.mark.parametrize("layout", [{"dp": 1, "tp": 2}, {"dp": 2}])
def test_sft_shards_like_pretraining(
    base_model_dir: Path, data_dir: Path, tmp_path: Path, layout: dict
) -> None:
    settings = {"steps": 4, "max_samples": 200, "held_out": 10, "checkpoint": {"every": 4}}
    name = "tp" if layout.get("tp") == 2 else "fsdp"
    result = run_two_ranks(sft_config(base_model_dir, data_dir, tmp_path / name, parallel=layout, **settings))
    assert len(result["losses"]) == 4
    assert import_hf(result["hf"]).cfg.vocab_size == import_hf(base_model_dir).cfg.vocab_size
    if name == "tp":
        single = SftTrainer(sft_config(base_model_dir, data_dir, tmp_path / "single", **settings)).train()
        assert result["losses"] == pytest.approx(single.losses, rel=1e-5)


def _ppo_rank_main(rank: int, world: int, port: int, config: dict, result_dir: str) -> None:

    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    from hcx.align.batching import similar_length_groups
    from hcx.align.config import PpoConfig
    from hcx.align.ppo import PpoTrainer

    as_torchrun_rank(rank, world, port)
    try:
        trainer = PpoTrainer(PpoConfig.model_validate(config))
        task = trainer.ppo
        sharded = {
            name: all(isinstance(p, DTensor) for p in net.parameters())
            for name, net in (("policy", task.policy), ("value", task.value), ("reference", task.reference))
        }
        forwards: list[int] = []  # this rank's scoring groups and learner chunks, before padding
        collect = task.collect

        def counting_collect(rollouts):
            rollouts = list(rollouts)
            lengths = [len(r.prompt_ids) + len(r.response_ids) for r in rollouts]
            forwards.append(len(similar_length_groups(lengths, task.cfg.forward_tokens)))
            return collect(rollouts)

        chunks = task.chunks

        def counting_chunks(minibatch):
            parts = list(chunks(minibatch))
            forwards.append(len(parts))
            return iter(parts)

        task.collect, task.chunks = counting_collect, counting_chunks
        trainer.train()
        trainer.close()
        exported = trainer.export()
        report = {
            "history": task.history,
            "sharded": sharded,
            "hf": str(exported) if exported else None,
            "forwards": forwards,
        }
        Path(result_dir, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def test_ppo_shards_its_networks_over_data_parallel_ranks(
    policy_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """PPO under torchrun (2 gloo ranks): policy, value and reference FSDP-sharded, each rank generating
    its half of the rollouts. Rollout seeds follow a rollout's place in the whole batch, so the first
    iteration (same initial policy) draws exactly the single process's rollouts; records agree on
    every rank (the early-stopping rules must decide alike)."""
    from tests.align.test_ppo import ppo_config

    settings = {
        "steps": 2,
        "rollouts_per_iteration": 16,
        "minibatch_size": 8,
        "asynchronous": False,
        "max_new_tokens": 16,
        "forward_tokens": 160,  # several scoring and learning forwards, not as many on every rank
    }
    single = PpoTrainer(ppo_config(policy_dir, data_dir, tmp_path / "single", **settings))
    single.train()
    single.close()
    cfg = ppo_config(policy_dir, data_dir, tmp_path / "dp", parallel={"dp": 2}, **settings)
    Path(cfg.output_dir).mkdir(parents=True)
    args = (2, _free_port(), cfg.model_dump(mode="json"), cfg.output_dir)
    mp.spawn(_ppo_rank_main, args=args, nprocs=2, join=True)
    ranks = [json.loads(Path(cfg.output_dir, f"rank{r}.json").read_text()) for r in range(2)]
    assert len({tuple(r["forwards"]) for r in ranks}) == 2, "the ranks' forward counts should differ"
    assert ranks[0]["sharded"] == {"policy": True, "value": True, "reference": True}
    clocks = ("seconds", "phases")  # each rank's own wall times; every other field is reduced over ranks
    histories = [[{k: v for k, v in h.items() if k not in clocks} for h in r["history"]] for r in ranks]
    assert histories[0] == histories[1] and len(histories[0]) == 2
    first, want = ranks[0]["history"][0], single.ppo.history[0]
    for key in ("reward", "length", "sequence_tokens"):
        assert first[key] == pytest.approx(want[key], rel=1e-5), key
    assert abs(first["kl"]) < 1e-3  # the policy has not moved yet
    assert import_hf(ranks[0]["hf"]).cfg == import_hf(policy_dir).cfg
