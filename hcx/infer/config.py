"""Engine configuration (SPEC §5.3: continuous batching over a bounded, paged KV cache).

The report gives no engine numbers; the defaults below suit a CPU box with the tiny model
and scale by recipe: ``num_blocks × block_size`` tokens of keys and values are allocated
once, up front, and never grow.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from hcx.config import Section


class EngineConfig(Section):
    """How much cache the engine holds and how much work one scheduler step may do."""

    block_size: int = Field(default=16, ge=1, description="tokens per KV-cache block")
    num_blocks: int = Field(default=1024, ge=1, description="blocks in the pool; memory is fixed at start")
    max_running: int = Field(default=64, ge=1, description="sequences decoded together at most")
    max_step_tokens: int = Field(
        default=512, ge=1, description="tokens per step: one per decoding sequence, the rest prefill chunks"
    )
    watermark_blocks: int = Field(
        default=0, ge=0, description="free blocks kept back when admitting, to spare running sequences"
    )
    prefix_caching: bool = Field(
        default=True, description="reuse the cached keys and values of earlier requests' identical prefixes"
    )
    seed: int = Field(default=0, description="draws the seeds of requests that give none")
    score_batch_tokens: int = Field(default=4096, ge=1, description="padded tokens per scoring forward")

    @model_validator(mode="after")
    def _check(self) -> EngineConfig:
        if self.watermark_blocks >= self.num_blocks:
            raise ValueError(
                f"watermark_blocks {self.watermark_blocks} must be below num_blocks {self.num_blocks}"
            )
        return self

    @property
    def cache_tokens(self) -> int:
        return self.num_blocks * self.block_size
