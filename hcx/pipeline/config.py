"""The ``pipeline:`` section of a recipe: which stages run, what each needs, and its evaluation.

SPEC §5.4: stages start by themselves once the stages they need have finished; training is
never interrupted for evaluation, which workers do elsewhere from checkpoint-saved events.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from hcx.config import Section

GPU_MEMORY_GIB: dict[str, float] = {
    "h100-80gb": 79.6,
    "h200-141gb": 140.4,
    "a100-80gb": 80.0,
    "a100-40gb": 40.0,
    "l40s-48gb": 45.0,
}
"""Memory each accelerator reports (``nvidia-smi``'s total, in GiB) for the dry run's memory check."""


class Resources(Section):
    """What a stage or an evaluation worker asks of the executor."""

    cpus: int = Field(default=0, ge=0, description="CPU cores; 0 = every core not held by others")
    gpus: float = Field(default=0, ge=0)
    memory_gb: float = Field(default=0, ge=0, description="0 = no request")
    gpu: str | None = Field(
        default=None,
        description="accelerator of each rank, for the --dry-run memory check: "
        f"{', '.join(GPU_MEMORY_GIB)}, or NAME:GIB for another (e.g. mi300x:192); None: no check",
    )

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, gpu: str | None) -> str | None:
        if gpu is None or gpu in GPU_MEMORY_GIB:
            return gpu
        _, colon, gib = gpu.rpartition(":")
        try:
            if colon and float(gib) > 0:
                return gpu
        except ValueError:
            pass
        raise ValueError(f"unknown gpu {gpu!r}: name one of {', '.join(GPU_MEMORY_GIB)} or write NAME:GIB")

    @property
    def gpu_memory_gib(self) -> float | None:
        """The device memory of ``gpu`` in GiB, None when no device is named."""
        if self.gpu is None:
            return None
        return GPU_MEMORY_GIB.get(self.gpu) or float(self.gpu.rpartition(":")[2])


class StageSpec(Section):
    kind: str | None = Field(
        default=None, description="data, tokenizer, pretrain, sft, rm, ppo or eval; default: the stage's name"
    )
    section: str | None = Field(default=None, description="its config section; default: the kind")
    needs: list[str] = Field(default_factory=list, description="stages that must finish first")
    resources: Resources = Field(default_factory=Resources)
    procs_per_node: int = Field(default=1, ge=1, description="ranks per node; >1 launches with torchrun")
    nodes: int = Field(
        default=1, ge=1, description="nodes; >1 is checked by --dry-run, launched by the cluster"
    )
    set: list[str] = Field(default_factory=list, description="overrides passed to the stage (a.b=c)")


class EvaluationSpec(Section):
    """Asynchronous checkpoint evaluation (SPEC §5.4): workers claim checkpoint-saved events."""

    workers: int = Field(default=1, ge=0, description="0 switches asynchronous evaluation off")
    stages: list[str] | None = Field(
        default=None, description="stages whose checkpoints are evaluated; default: every LM-training stage"
    )
    suite: str = "quick"
    limit: int | None = Field(default=None, ge=1, description="items per task")
    data_dir: str | None = "${data_dir}"
    lease_seconds: float = Field(default=120, gt=0, description="a silent worker's claim expires after this")
    heartbeat_seconds: float = Field(default=10, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    poll_seconds: float = Field(default=1.0, gt=0)
    resources: Resources = Field(default_factory=lambda: Resources(cpus=1))
    device: str = Field(default="auto", description="where workers evaluate; auto: the GPU when there is one")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="auto: bfloat16 where the device computes it natively, else float32"
    )


class PipelineConfig(Section):
    run_dir: str = "runs/pipeline"
    store: str | None = Field(
        default=None, description="SQLAlchemy URL of the event store; default sqlite:///<run_dir>/pipeline.db"
    )
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default sqlite:///<run_dir>/mlflow.db"
    )
    experiment: str = "hcx"
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = Field(default=None, description="an existing Ray cluster; default: start one")
    register_models: bool = True
    stages: dict[str, StageSpec]
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)

    @model_validator(mode="after")
    def _fill_kinds(self) -> PipelineConfig:
        for name, spec in self.stages.items():
            if spec.kind is None:
                spec.kind = name
            if spec.section is None:
                spec.section = spec.kind
        return self

    def store_url(self) -> str:
        return self.store or f"sqlite:///{self.run_dir}/pipeline.db"

    def tracking(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.run_dir}/mlflow.db"
