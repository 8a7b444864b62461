"""3D parallelism applied to the model from outside (SPEC §4): one device mesh (pp, dp, tp).

- tensor parallel: DTensor ``parallelize_module`` — attention and MLP projections split by
  heads / hidden units (column then row parallel), the embedding and output head split by vocab;
- pipeline parallel: ``torch.distributed.pipelining`` — each stage keeps a contiguous run of
  layers (the first the embedding, the last the norm and head) and a schedule moves
  micro-batches between stages;
- data parallel: FSDP2 ``fully_shard`` per block and on the root, bf16 parameters with fp32
  gradient reduction;

plus activation checkpointing and ``torch.compile`` per block. Any degree may be 1; on CPU the
gloo backend runs all of them. The model file knows nothing of this.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Replicate

from hcx.model.config import ModelConfig
from hcx.model.transformer import Transformer
from hcx.train.config import ParallelConfig


class MeshError(ValueError):
    """A parallel layout that cannot run on this world or this model."""


@dataclass
class Mesh:
    """Where this rank sits. ``mesh`` is None for a plain single-process run."""

    mesh: DeviceMesh | None
    pp: int = 1
    dp: int = 1
    tp: int = 1
    pp_rank: int = 0
    dp_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp - 1

    def group(self, dim: str):
        return self.mesh[dim].get_group() if self.mesh is not None else None


def init_distributed(device: str = "auto") -> torch.device:
    """Join the torchrun process group when launched by torchrun; return this rank's device.

    ``device`` is a stage's setting: ``auto`` takes this rank's GPU when there is one, ``cpu``
    keeps everything on the CPU (gloo), ``cuda`` insists on a GPU.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise MeshError(f"device {device!r}: no CUDA device is available on this machine")
    if "RANK" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo")
    if kind == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(kind)


def leave_process_group() -> int:
    """Leave the torchrun process group, if this process joined one; return this rank (0 alone).

    Every ``hcx`` command that runs a stage calls it when the stage ends, however it ends, and
    prints its summary on rank 0 only.
    """
    if not dist.is_initialized():
        return 0
    rank = dist.get_rank()
    dist.destroy_process_group()
    return rank


def resolve_dp(cfg: ParallelConfig, world: int) -> int:
    """The data-parallel degree of ``cfg`` on ``world`` ranks, or a MeshError saying why it does not fit."""
    dp = cfg.dp if cfg.dp != -1 else world // (cfg.tp * cfg.pp)
    if min(dp, cfg.tp, cfg.pp) < 1 or dp * cfg.tp * cfg.pp != world:
        raise MeshError(
            f"pretrain.parallel: pp={cfg.pp} × dp={cfg.dp} × tp={cfg.tp} does not divide the world size "
            f"{world} (dp=-1 takes what pp × tp leave; launch with torchrun --nproc-per-node)"
        )
    return dp


def build_mesh(cfg: ParallelConfig, device: torch.device) -> Mesh:
    """Check the layout against the world size, then build the (pp, dp, tp) mesh."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    dp = resolve_dp(cfg, world)
    if world == 1:
        return Mesh(mesh=None, device=device)
    mesh = init_device_mesh(device.type, (cfg.pp, dp, cfg.tp), mesh_dim_names=("pp", "dp", "tp"))
    return Mesh(
        mesh=mesh,
        pp=cfg.pp,
        dp=dp,
        tp=cfg.tp,
        pp_rank=mesh["pp"].get_local_rank(),
        dp_rank=mesh["dp"].get_local_rank(),
        device=device,
    )


def check_layout(cfg: ModelConfig, tp: int, pp: int) -> None:
    """Refuse a (tp, pp) split the model's shapes do not allow (also used by ``hcx run --dry-run``)."""
    for name, size in (("n_heads", cfg.n_heads), ("n_kv_heads", cfg.n_kv_heads), ("ffn_dim", cfg.ffn_dim)):
        if size % tp:
            raise MeshError(f"pretrain.model.{name}={size} is not divisible by parallel.tp={tp}")
    if cfg.vocab_size % tp:
        raise MeshError(f"pretrain.model.vocab_size={cfg.vocab_size} is not divisible by parallel.tp={tp}")
    if tp > 1 and cfg.tie_embeddings:
        raise MeshError("pretrain.model.tie_embeddings is not supported with parallel.tp > 1")
    if cfg.n_layers < pp:
        raise MeshError(f"pretrain.model.n_layers={cfg.n_layers} is fewer than parallel.pp={pp} stages")
    if pp > 1 and cfg.tie_embeddings:
        raise MeshError("pretrain.model.tie_embeddings is not supported with parallel.pp > 1")


def split_pipeline_stage(model: Transformer, pp_rank: int, pp: int) -> Transformer:
    """Keep this stage's contiguous layers; embeddings on the first stage, norm and head on the last."""
    per_stage = math.ceil(model.cfg.n_layers / pp)
    keep = set(range(pp_rank * per_stage, min(model.cfg.n_layers, (pp_rank + 1) * per_stage)))
    for name in list(model.layers):
        if int(name) not in keep:
            del model.layers[name]
    if pp_rank > 0:
        model.tok_embeddings = None
    if pp_rank < pp - 1:
        model.norm = model.output = None
    return model


def apply_tensor_parallel(model: Transformer, tp_mesh: DeviceMesh) -> None:
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    block_plan = {
        "attention.wq": ColwiseParallel(),
        "attention.wk": ColwiseParallel(),
        "attention.wv": ColwiseParallel(),
        "attention.wo": RowwiseParallel(),
        "feed_forward.w1": ColwiseParallel(),
        "feed_forward.w3": ColwiseParallel(),
        "feed_forward.w2": RowwiseParallel(),
    }
    for block in model.layers.values():
        parallelize_module(block, tp_mesh, block_plan)
    top_plan = {}
    if model.tok_embeddings is not None:
        top_plan["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
    if model.output is not None:
        top_plan["output"] = ColwiseParallel(output_layouts=Replicate())
    if top_plan:
        parallelize_module(model, tp_mesh, top_plan)


def apply_activation_checkpointing(model: Transformer) -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for name, block in list(model.layers.items()):
        model.layers[name] = checkpoint_wrapper(block, preserve_rng_state=False)


def apply_fsdp(model: Transformer, dp_mesh: DeviceMesh, param_dtype: torch.dtype | None) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for block in model.layers.values():
        fully_shard(block, mesh=dp_mesh, mp_policy=policy)
    if model.output is not None and not model.cfg.tie_embeddings:
        # its own unit: scoring and PPO run the head outside the model's forward, on a few positions
        fully_shard(model.output, mesh=dp_mesh, mp_policy=policy)
    fully_shard(model, mesh=dp_mesh, mp_policy=policy)


def shard_for_forward(model: nn.Module, mesh: Mesh) -> nn.Module:
    """FSDP2 over the data-parallel ranks for a network used for forwards only (PPO's reference and
    reward model): every decoder as in training, a top-level head (a reward model's) as its own unit.

    Every rank must then run the same number of forwards (they gather shards collectively).
    """
    if mesh.dp == 1:
        return model
    from torch.distributed.fsdp import fully_shard

    dp_mesh = mesh.mesh["dp"]
    if isinstance(model, Transformer):
        apply_fsdp(model, dp_mesh, None)
        return model
    for child in list(model.children()):
        if isinstance(child, Transformer):
            apply_fsdp(child, dp_mesh, None)
        elif isinstance(child, nn.Linear):
            fully_shard(child, mesh=dp_mesh)
    fully_shard(model, mesh=dp_mesh)
    return model


def parallelize(
    model: Transformer,
    mesh: Mesh,
    param_dtype: torch.dtype | None = None,
    activation_checkpointing: bool = False,
    compile: bool = False,
    compile_mode: str = "default",
) -> Transformer:
    """Shard ``model`` for this rank; returns this rank's module.

    ``model`` holds loaded weights (moved to the device here) or is on the meta device, to be
    :func:`materialize`-d after sharding, so no rank ever allocates the whole model.
    """
    check_layout(model.cfg, mesh.tp, mesh.pp)
    if mesh.pp > 1:
        model = split_pipeline_stage(model, mesh.pp_rank, mesh.pp)
    if not is_meta(model):
        model = model.to(mesh.device)
    if mesh.tp > 1:
        apply_tensor_parallel(model, mesh.mesh["tp"])
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile:
        for name, block in list(model.layers.items()):
            model.layers[name] = torch.compile(block, mode=compile_mode)
    if mesh.dp > 1:
        apply_fsdp(model, mesh.mesh["dp"], param_dtype)
    return model


def is_meta(model: nn.Module) -> bool:
    return any(p.device.type == "meta" for p in model.parameters())


@torch.no_grad()
def materialize(model: nn.Module, device: torch.device, seed: int) -> None:
    """Allocate a meta-built, sharded model on ``device`` (this rank's shards only) and initialise it.

    :meth:`Transformer.init_weights` seeds each parameter by its name, so the result equals
    the whole model initialised on one process with the same seed, whatever the layout.
    """
    model.to_empty(device=device)
    for module in model.modules():
        if isinstance(module, Transformer):
            if module.cfg.tie_embeddings and module.output is not None and module.tok_embeddings is not None:
                module.output.weight = module.tok_embeddings.weight
            module.init_weights(seed)


def build_pipeline_schedule(model: Transformer, mesh: Mesh, n_microbatches: int, kind: str, loss_fn):
    """A pipeline schedule for this stage. Rebuilt when the row shape changes (context switch)."""
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    stage = PipelineStage(model, mesh.pp_rank, mesh.pp, mesh.device, group=mesh.group("pp"))
    schedule_cls = Schedule1F1B if kind == "1f1b" else ScheduleGPipe
    return schedule_cls(stage, n_microbatches=n_microbatches, loss_fn=loss_fn)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float, mesh: Mesh) -> Tensor:
    """Clip by the global gradient norm across every shard and stage; return that norm.

    Gradients live on different meshes (tp-sharded DTensors, dp-only DTensors, plain tensors),
    so norms are taken per group and combined; pipeline stages add their squares.
    """
    groups: dict[object, list[nn.Parameter]] = {}
    for p in params:
        if p.grad is not None:
            key = p.grad.device_mesh if isinstance(p.grad, DTensor) else None
            groups.setdefault(key, []).append(p)
    squares = torch.zeros((), device=mesh.device)
    for group in groups.values():
        norm = torch.nn.utils.get_total_norm([p.grad for p in group], foreach=True)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        squares = squares + norm.float() ** 2
    if mesh.pp > 1:
        dist.all_reduce(squares, group=mesh.group("pp"))
    total = squares.sqrt()
    if max_norm > 0:
        for group in groups.values():
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total, foreach=True)
    return total
