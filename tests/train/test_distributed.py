"""gloo runs on CPU: FSDP=2, TP=2, PP=2, FSDP=2×TP=2 and the full PP=2×FSDP=2×TP=2 mesh against
one process (float32, same seed), for pretraining and (on the 3-D mesh) packed SFT.

Each rank runs the same ``Pretrainer`` (or ``sft``) that ``torchrun`` would start (it joins the
process group from the RANK/WORLD_SIZE/MASTER_* environment); the batch is split over ranks by the
loader, so all layouts see the same global batches and must give the same losses.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from hcx.align.config import SftConfig
from hcx.align.sft import sft
from hcx.train.checkpoint import read_events
from hcx.train.config import PretrainConfig
from hcx.train.pretrain import Pretrainer

LAYOUTS = {
    "fsdp": {"dp": 2},
    "tp": {"dp": 1, "tp": 2},
    "pp": {"dp": 1, "pp": 2, "pp_microbatches": 2},
    "fsdp_x_tp": {"dp": 2, "tp": 2},  # a 2-D mesh on 4 ranks
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_torchrun_rank(rank: int, world: int, port: int) -> None:
    """The environment torchrun gives rank ``rank`` (the trainer joins the group from it); one thread."""
    env = {
        "RANK": rank,
        "LOCAL_RANK": rank,
        "WORLD_SIZE": world,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
    }
    os.environ.update({k: str(v) for k, v in env.items()})
    torch.set_num_threads(1)


def _rank_main(rank: int, world: int, port: int, config: dict, result_path: str, stage: str) -> None:
    import torch.distributed as dist

    as_torchrun_rank(rank, world, port)
    try:
        if stage == "sft":
            result = sft(SftConfig.model_validate(config))
        else:
            result = Pretrainer(PretrainConfig.model_validate(config)).train()
        if rank == 0:
            record = {"losses": result.losses, "step": result.step, "metrics": result.metrics}
            Path(result_path).write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


def run_distributed(cfg: PretrainConfig | SftConfig, world: int = 2) -> dict:
    result_path = Path(cfg.output_dir) / "result.json"
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    config, stage = cfg.model_dump(mode="json"), "sft" if isinstance(cfg, SftConfig) else "pretrain"
    mp.spawn(_rank_main, args=(world, _free_port(), config, str(result_path), stage), nprocs=world, join=True)
    return json.loads(result_path.read_text())


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_parallel_layouts_match_single_process(make_config, tmp_path, layout):
    """Over both context stages (the switch rebuilds the pipeline schedule and RoPE tables)."""
    common = {"steps": 4, "checkpoint": {"every": 4}}
    single_cfg = make_config(
        output_dir=str(tmp_path / "single"), export_hf=str(tmp_path / "single_hf"), **common
    )
    single = Pretrainer(single_cfg).train().losses
    cfg = make_config(
        output_dir=str(tmp_path / layout),
        export_hf=str(tmp_path / f"{layout}_hf"),
        parallel=LAYOUTS[layout],
        **common,
    )
    layout_cfg = LAYOUTS[layout]
    parallel = run_distributed(
        cfg, world=layout_cfg.get("dp", 1) * layout_cfg.get("tp", 1) * layout_cfg.get("pp", 1)
    )
    assert parallel["step"] == 4 and len(parallel["losses"]) == 4
    diffs = [abs(a - b) for a, b in zip(single, parallel["losses"], strict=True)]
    print(f"{layout}: max |loss diff| over 4 steps = {max(diffs):.2e}")
    assert max(diffs) <= 1e-4
    assert single[-1] < single[0]
    # the sharded checkpoint is complete and announced
    assert [e.step for e in read_events(cfg.output_dir)] == [4]
    assert (Path(cfg.output_dir) / "checkpoints" / "step_0000004" / ".metadata").is_file()
    # the export gathers every shard and stage into one full model
    expected, exported = (
        load_file(tmp_path / "single_hf" / "model.safetensors"),
        load_file(tmp_path / f"{layout}_hf" / "model.safetensors"),
    )
    assert exported.keys() == expected.keys()
    for name, tensor in expected.items():
        # 4 Adam steps amplify float rounding differences to ~1e-5; a misplaced shard would be ~1e-2
        torch.testing.assert_close(exported[name], tensor, atol=2e-4, rtol=0, msg=name)


MESH_3D = {"pp": 2, "dp": 2, "tp": 2, "pp_microbatches": 2}  # eight ranks


def assert_same_export(expected_dir: Path, exported_dir: Path) -> None:
    expected = load_file(Path(expected_dir) / "model.safetensors")
    exported = load_file(Path(exported_dir) / "model.safetensors")
    assert exported.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(exported[name], tensor, atol=2e-4, rtol=0, msg=name)


def test_3d_mesh_pretraining_matches_single_process(make_config, tmp_path):
    """pp=2 × FSDP dp=2 × tp=2: every stage holds a tp-split, dp-sharded half of the layers."""
    common = {
        "steps": 3,
        "model": {"n_layers": 2, "max_seq_len": 64},
        "stages": [{"fraction": 1.0, "seq_len": 32, "batch_size": 4, "rope_base": 10_000}],
        "checkpoint": {"every": 3},
    }
    single_cfg = make_config(
        output_dir=str(tmp_path / "single"), export_hf=str(tmp_path / "single_hf"), **common
    )
    single = Pretrainer(single_cfg).train().losses
    cfg = make_config(
        output_dir=str(tmp_path / "3d"), export_hf=str(tmp_path / "3d_hf"), parallel=MESH_3D, **common
    )
    parallel = run_distributed(cfg, world=8)
    assert parallel["step"] == 3 and len(parallel["losses"]) == 3
    diff = max(abs(a - b) for a, b in zip(single, parallel["losses"], strict=True))
    print(f"3d pretrain: max |loss diff| over 3 steps = {diff:.2e}")
    assert diff <= 1e-4
    assert single[-1] < single[0]
    assert [e.step for e in read_events(cfg.output_dir)] == [3]
    assert (Path(cfg.output_dir) / "checkpoints" / "step_0000003" / ".metadata").is_file()
    assert_same_export(tmp_path / "single_hf", tmp_path / "3d_hf")


def test_3d_mesh_packed_sft_matches_single_process(base_model_dir, data_dir, tmp_path):
    """Packed SFT on pp=2 × dp=2 × tp=2 against one process given the same global batch.

    Each dp rank takes its own packed batch (``max_tokens // seq_len`` rows), so one step of the
    mesh trains on ``dp`` consecutive batches; one process with ``dp ×`` the token budget gets
    exactly those rows in the same order. The pipeline's loss is the mean over micro-batches of
    each micro-batch's assistant-token mean (and the dp ranks' mean of that), which is not the
    token mean of the whole batch (micro-batches hold different numbers of assistant tokens), so
    the single process accumulates the same ``dp × pp_microbatches`` micro-batches.
    """
    seq_len, rows_per_rank = 64, 4
    common = {
        "init": str(base_model_dir),
        "sources": [{"path": str(data_dir / "sft" / "ko.jsonl.gz"), "language": "ko"}],
        "korean_ratio": 1.0,
        "max_samples": 120,
        "held_out": 0,
        "max_len": seq_len,
        "batching": "packed",
        "seq_len": seq_len,
        "steps": 3,
        "dtype": "float32",
        "log_every": 1,
        "optim": {"lr": 1e-3, "warmup_steps": 1, "weight_decay": 0.0},
        "checkpoint": {"every": 3},
    }
    splits = MESH_3D["dp"] * MESH_3D["pp_microbatches"]
    single_cfg = SftConfig.model_validate(
        {
            **common,
            "output_dir": str(tmp_path / "single"),
            "max_tokens": MESH_3D["dp"] * rows_per_rank * seq_len,
            "grad_accum": splits,
        }
    )
    single = sft(single_cfg)
    cfg = SftConfig.model_validate(
        {
            **common,
            "output_dir": str(tmp_path / "3d"),
            "max_tokens": rows_per_rank * seq_len,
            "parallel": MESH_3D,
        }
    )
    parallel = run_distributed(cfg, world=8)
    assert parallel["step"] == 3 and len(parallel["losses"]) == 3
    diff = max(abs(a - b) for a, b in zip(single.losses, parallel["losses"], strict=True))
    print(f"3d packed sft: max |loss diff| over 3 steps = {diff:.2e}")
    assert diff <= 1e-4
    assert single.losses[-1] < single.losses[0]
    assert parallel["metrics"]["hf_dir"] == str(tmp_path / "3d" / "hf")
    assert_same_export(Path(single.metrics["hf_dir"]), tmp_path / "3d" / "hf")
