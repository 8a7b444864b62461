"""What one rank of each training stage holds, for the memory line of ``hcx run --dry-run``.

:func:`hcx.train.memory.estimate_memory` does the arithmetic; this module maps a stage's config
to its inputs: the networks a rank holds, its parallel layout and the micro-batch one
forward/backward computes on (after gradient accumulation and pipeline micro-batches split the
step). The worst case of each stage's batching is used:

- pretrain: ``batch_size / (dp × splits)`` rows of ``seq_len`` per context stage (``splits``:
  ``pp_microbatches`` under pipeline parallel, else ``grad_accum``), the larger of the stages;
- sft: packed, ``max(1, max_tokens // seq_len)`` rows of ``seq_len``; grouped, ``max_tokens``
  tokens in rows of ``min(max_len, max_tokens)``; padded, ``batch_size`` rows of ``max_len``
  (``max_len`` defaults to the model context), each rank taking a whole batch;
- rm: ``prompts_per_step`` prompts of two responses (one pair each) padded to ``max_len``, a
  scalar head instead of the vocabulary projection;
- ppo: the policy and the value network train (the value network has a scalar head) on
  ``max(1, forward_tokens // (max_prompt_len + max_new_tokens))`` rows, logits at the
  ``max_new_tokens`` response positions only; the reference and the reward model are held for
  forward only, all four sharded over the data-parallel ranks; each rank also holds an unsharded
  copy of the policy in the compute dtype for its rollout engine (the engine is not sharded).

An alignment stage's model shape comes from its init directory's ``config.json``; before that
directory exists (a dry run of a new recipe) it falls back to the recipe's ``pretrain.model``
section, with the vocabulary of the recipe's tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hcx.config import read_recipe
from hcx.model.config import ModelConfig, padded_vocab_size
from hcx.model.load import resolve_device
from hcx.model.precision import compute_dtype
from hcx.train.memory import MemoryEstimate, estimate_memory
from hcx.train.parallel import resolve_dp

if TYPE_CHECKING:
    from hcx.pipeline.plan import Plan, PlannedStage

RESPONSES_PER_PROMPT = 2


@dataclass(frozen=True)
class StageMemory:
    """A stage's estimate and the micro-batch it is for, or why there is none (``estimate=None``)."""

    estimate: MemoryEstimate | None
    micro_batch: str = ""
    unknown: str = ""


def hf_model_config(directory: str | Path) -> ModelConfig | None:
    """The decoder shape of a Hugging Face ``config.json``, if there is one (no weights: a dry run
    must not load a 70B model)."""
    from hcx.model.hf import hf_model_config as read_config

    return read_config(directory) if (Path(directory) / "config.json").is_file() else None


def _tokenizer_size(tokenizer_dir: str | None) -> int | None:
    if not tokenizer_dir or not Path(tokenizer_dir).exists():
        return None
    from hcx.tokenizer import load

    try:
        return load(tokenizer_dir).vocab_size
    except (OSError, ValueError):
        return None


def _tokenizer_vocab(plan: Plan, tokenizer_dir: str | None) -> int | None:
    for stage in plan.stages.values():
        if stage.kind == "tokenizer":
            extend = stage.config.extend  # type: ignore[attr-defined]
            if extend is None:
                return padded_vocab_size(stage.config.vocab_size)  # type: ignore[attr-defined]
            base = _tokenizer_size(extend.base)
            return None if base is None else padded_vocab_size(base + extend.new_tokens)
    size = _tokenizer_size(tokenizer_dir)
    return None if size is None else padded_vocab_size(size)


def pretrain_model(plan: Plan) -> ModelConfig | None:
    """The recipe's pretraining model, its vocabulary resolved from the tokenizer; None if unknown.

    Continued pretraining takes the shape of ``init_from`` (once that directory exists), grown to
    an extended tokenizer's vocabulary.
    """
    stage = next((s for s in plan.stages.values() if s.kind == "pretrain"), None)
    section: Any = (
        stage.config.model_dump() if stage is not None else read_recipe(plan.recipe).get("pretrain") or {}
    )
    if not isinstance(section, dict):
        return None
    tokenizer = section.get("tokenizer")
    if section.get("init_from"):
        model = hf_model_config(section["init_from"])
        vocab = _tokenizer_vocab(plan, tokenizer)
        if model is not None and vocab is not None and vocab > (model.vocab_size or 0):
            model = model.model_copy(update={"vocab_size": vocab})
        return model
    if not isinstance(section.get("model"), dict):
        return None
    model = ModelConfig.model_validate(section["model"])
    if model.vocab_size is None:
        vocab = _tokenizer_vocab(plan, tokenizer)
        if vocab is None:
            return None
        model = model.model_copy(update={"vocab_size": vocab})
    return model


def _aligned_model(directory: str, plan: Plan) -> ModelConfig | None:
    return hf_model_config(directory) or pretrain_model(plan)


def stage_memory(stage: PlannedStage, plan: Plan) -> StageMemory | None:
    """Per-rank memory of a training stage; None for a stage that trains no network."""
    kind = stage.kind
    cfg: Any = stage.config
    if kind not in ("pretrain", "sft", "rm", "ppo"):
        return None
    parallel = cfg.parallel
    world = stage.spec.procs_per_node * stage.spec.nodes
    layout = dict(
        dp=resolve_dp(parallel, world),
        tp=parallel.tp,
        pp=parallel.pp,
        pp_microbatches=parallel.pp_microbatches,
        pp_schedule=parallel.pp_schedule,
        dtype=str(compute_dtype(cfg.dtype, resolve_device(cfg.device)[0])).removeprefix("torch."),
        activation_checkpointing=cfg.activation_checkpointing,
    )
    if kind == "pretrain":
        model = pretrain_model(plan)
        if model is None:
            return StageMemory(None, unknown="the tokenizer's vocabulary is not known yet")
        splits = parallel.pp_microbatches if parallel.pp > 1 else cfg.grad_accum
        options = []
        for context in cfg.stages:
            rows = max(1, context.batch_size // (layout["dp"] * splits))
            options.append(
                (estimate_memory(model, rows, context.seq_len, **layout), f"{rows}×{context.seq_len}")
            )
        estimate, micro = max(options, key=lambda option: option[0].total)
        return StageMemory(estimate, micro)

    source = cfg.policy if kind == "ppo" else cfg.init
    model = _aligned_model(source, plan)
    if model is None:
        return StageMemory(None, unknown=f"no {source}/config.json yet and no pretrain.model in the recipe")
    if kind == "sft":
        max_len = cfg.max_len or model.max_seq_len
        if cfg.batching == "packed":
            rows, seq_len = max(1, cfg.max_tokens // cfg.seq_len), cfg.seq_len
        elif cfg.batching == "grouped":
            seq_len = min(max_len, cfg.max_tokens)
            rows = max(1, cfg.max_tokens // seq_len)
        else:
            rows, seq_len = cfg.batch_size, max_len
        return StageMemory(estimate_memory(model, rows, seq_len, **layout), f"{rows}×{seq_len}")
    if kind == "rm":
        rows = cfg.prompts_per_step * RESPONSES_PER_PROMPT
        seq_len = cfg.max_len or model.max_seq_len
        return StageMemory(
            estimate_memory(model, rows, seq_len, lm_head=False, **layout), f"{rows}×{seq_len}"
        )

    seq_len = cfg.max_prompt_len + cfg.max_new_tokens
    rows = max(1, cfg.forward_tokens // seq_len)
    responses = cfg.max_new_tokens
    policy = estimate_memory(model, rows, seq_len, logit_positions=responses, **layout)
    value = estimate_memory(model, rows, seq_len, lm_head=False, **layout)
    reference = estimate_memory(model, rows, seq_len, trains=False, **layout)
    reward = estimate_memory(model, rows, seq_len, trains=False, lm_head=False, **layout)
    engine = estimate_memory(model, 1, 1, trains=False, **{**layout, "dp": 1, "tp": 1, "pp": 1})
    return StageMemory(
        policy + value + reference + reward + engine, f"{rows}×{seq_len}, 4 networks + the rollout copy"
    )
