"""Compile the training or the rollout pipeline to KFP IR YAML (no network, no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from kfp import compiler

from aicrush.config import AicrushConfig, build_config
from pipelines.rollout import build_rollout_pipeline
from pipelines.training import build_training_pipeline

PipelineName = Literal["training", "rollout"]
PIPELINES: tuple[PipelineName, ...] = ("training", "rollout")


def compile_pipeline(
    pipeline: PipelineName, output_path: str | Path, cfg: AicrushConfig | None = None
) -> Path:
    """Write ``pipeline`` ("training" or "rollout") for ``cfg`` (default: the ``tiny`` preset) as
    KFP IR YAML to ``output_path``. Raises ValueError for another pipeline name."""
    builders: dict[str, Any] = {
        "training": build_training_pipeline,
        "rollout": build_rollout_pipeline,
    }
    if pipeline not in builders:
        raise ValueError(f"unknown pipeline {pipeline!r}; choose one of {', '.join(PIPELINES)}")
    cfg = cfg or build_config()
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(builders[pipeline](cfg), package_path=str(out))
    return out


def compile_training_pipeline(output_path: str | Path, cfg: AicrushConfig | None = None) -> Path:
    """The training pipeline as KFP IR YAML (see :func:`compile_pipeline`)."""
    return compile_pipeline("training", output_path, cfg)


def compile_rollout_pipeline(output_path: str | Path, cfg: AicrushConfig | None = None) -> Path:
    """The rollout pipeline as KFP IR YAML (see :func:`compile_pipeline`)."""
    return compile_pipeline("rollout", output_path, cfg)
