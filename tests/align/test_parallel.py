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
from hcx.align.sft import SftTrainer
from hcx.model.hf import import_hf
from tests.align.test_sft import sft_config
from tests.train.test_distributed import _free_port


def _rank_main(rank: int, world: int, port: int, config: dict, result_path: str) -> None:
    import os

    import torch
    import torch.distributed as dist

    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
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
        assert result["losses"] == pytest.approx(single.losses, abs=1e-4)
