"""The one model loader: a Hugging Face export or an hcx training checkpoint, with its tokenizer.

Serving, evaluation, the pipeline's evaluation workers, the red-team app and every training
stage that starts from a model (SFT, RM, PPO) load through :func:`load_model`, so a model
arrives on the same device, in the same dtype and with the same RoPE base whoever asks:

- a directory with ``config.json`` is a Hugging Face export (:func:`hcx.model.hf.import_hf`): ours,
  or a published Llama, Mistral or Qwen2; a hub id ("org/name") that is not a local directory is
  downloaded first;
- a directory with ``hcx_meta.json`` is one DCP training checkpoint (``step_NNNNNNN``): only
  the model's weights are read (no optimizer), the config (RoPE base included) from the meta,
  LoRA adapters merged into their weights (:mod:`hcx.model.lora`);
- a training output directory (``checkpoints/latest``) means its latest checkpoint.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from torch import Tensor
from torch.distributed.checkpoint.api import CheckpointException

from hcx.model.config import ModelConfig
from hcx.model.lora import merge_lora
from hcx.model.precision import auto_dtype
from hcx.model.transformer import Transformer
from hcx.records import read_json_file

if TYPE_CHECKING:
    from hcx.tokenizer import ChatTokens, Tokenizer

META = "hcx_meta.json"
LATEST = "latest"
FILES = "files"  # the key of hcx_meta.json that lists the checkpoint's files with their sizes and hashes
DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


class ModelLoadError(RuntimeError):
    """A path that is not a loadable model; the message names the path and what is missing."""


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_problem(path: Path, expected: dict[str, Any]) -> str | None:
    """Why a checkpoint file differs from its record at save time (``bytes``, ``sha256``), None when it does not."""
    if not path.is_file():
        return f"{path}: missing"
    size = path.stat().st_size
    if size != expected["bytes"]:
        return f"{path}: {size} bytes, {expected['bytes']} when saved (truncated or overwritten)"
    if sha256_of(path) != expected["sha256"]:
        return f"{path}: contents differ from when saved (SHA-256 mismatch: corrupted)"
    return None


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer_dir: Path
    kind: str  # "hf" or "checkpoint"
    extra: dict[str, Tensor] = field(default_factory=dict)  # weights that are not the decoder's

    def tokenizer(self, chat: ChatTokens | None = None) -> Tokenizer:
        from hcx.tokenizer import load

        return load(self.tokenizer_dir, chat)

    def pair(self) -> tuple[Transformer, Tokenizer]:
        return self.model, self.tokenizer()


def resolve_device(
    device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"
) -> tuple[torch.device, torch.dtype]:
    """``auto``: the GPU when there is one; bfloat16 where the device computes it natively
    (:mod:`hcx.model.precision`), float32 elsewhere."""
    if isinstance(device, str) and device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    target = torch.device(device)
    if isinstance(dtype, torch.dtype):
        return target, dtype
    if dtype == "auto":
        return target, auto_dtype(target)
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)} or auto")
    return target, DTYPES[dtype]


def checkpoint_dir(path: Path) -> Path:
    """A training output directory's latest checkpoint, or ``path`` itself."""
    for pointer in (path / LATEST, path / "checkpoints" / LATEST):
        if pointer.is_file():
            return pointer.parent / pointer.read_text().strip()
    return path


def run_dcp(fn, *args, **kwargs):
    """Call a ``torch.distributed.checkpoint`` function; without a process group it runs
    single-process, as intended (training checkpoints and this loader share it)."""
    import torch.distributed as dist

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        return fn(*args, no_dist=not dist.is_initialized(), **kwargs)


def _load_checkpoint(path: Path) -> tuple[Transformer, Path]:
    import torch.distributed.checkpoint as dcp

    meta = read_json_file(path / META, ModelLoadError)
    problems = [file_problem(path / name, record) for name, record in sorted(meta.get(FILES, {}).items())]
    if any(problems):
        raise ModelLoadError(f"checkpoint {path} is damaged:\n  " + "\n  ".join(p for p in problems if p))
    if "tokenizer" not in meta:
        raise ModelLoadError(f"{path / META}: no tokenizer recorded; this checkpoint cannot be loaded alone")
    if not (path / ".metadata").is_file():
        raise ModelLoadError(f"{path}: not a complete checkpoint (no .metadata)")
    model = Transformer(ModelConfig.model_validate(meta["model"]))
    prefix = meta.get("weights_prefix", "")
    state = {"model": {prefix + k: v for k, v in model.state_dict().items()}}
    if "lora" in meta:  # adapted layers are stored under PEFT's names: read them as saved, then merge
        state = {"model": _stored_weights(path, prefix)}
    try:
        run_dcp(dcp.load, state, checkpoint_id=str(path))
    except CheckpointException as exc:  # a BaseException: it would slip past load_model's handler
        raise ModelLoadError(f"checkpoint {path} cannot be read: {exc}") from exc
    weights = {k.removeprefix(prefix): v for k, v in state["model"].items()}
    if "lora" in meta:
        weights = merge_lora(weights, meta["lora"]["scaling"])
    model.load_state_dict(weights)
    return model, Path(meta["tokenizer"])


def _stored_weights(path: Path, prefix: str) -> dict[str, Tensor]:
    """Empty tensors for every model weight a checkpoint stores under ``prefix``, named and shaped as saved."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    stored = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    return {
        key.removeprefix("model."): torch.empty(item.size, dtype=item.properties.dtype)
        for key, item in stored.items()
        if key.startswith("model." + prefix) and isinstance(item, TensorStorageMetadata)
    }


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    *,
    tokenizer: str | Path | None = None,
    trainable: bool = False,
    keep_extra: bool = False,
) -> LoadedModel:
    """Load ``path`` (see the module docstring) onto ``device`` in ``dtype``.

    ``tokenizer`` overrides the model's own tokenizer directory. Unless ``trainable``, the model
    is in eval mode with gradients off. ``keep_extra`` keeps weights that are not the decoder's
    (a reward model's ``score`` head) in :attr:`LoadedModel.extra` instead of refusing them.
    """
    from hcx.model.hf import import_hf, resolve_model_dir

    try:
        path = resolve_model_dir(path)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"model {exc}") from exc
    if not path.is_dir():
        raise ModelLoadError(
            f"model {path}: not a directory (give a Hugging Face export or an hcx checkpoint)"
        )
    device, dtype = resolve_device(device, dtype)
    extra: dict[str, Tensor] = {}
    resolved = checkpoint_dir(path)
    try:
        if (resolved / META).is_file():
            model, tokenizer_dir, kind = *_load_checkpoint(resolved), "checkpoint"
        elif (path / "config.json").is_file():
            model, tokenizer_dir, kind = import_hf(path, extra=extra if keep_extra else None), path, "hf"
        else:
            raise ModelLoadError(
                f"model {path}: neither config.json (Hugging Face) nor {META} (hcx checkpoint)"
            )
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise ModelLoadError(f"model {path} cannot be loaded: {exc}") from exc
    model = model.to(device=device, dtype=dtype)
    if not trainable:
        model.eval().requires_grad_(False)
    return LoadedModel(model, Path(tokenizer) if tokenizer else tokenizer_dir, kind, extra)
