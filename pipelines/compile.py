"""Compile the training pipeline to KFP IR YAML (no network, no cluster)."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from aicrush.config import AicrushConfig, build_config
from pipelines.training import build_training_pipeline


def compile_training_pipeline(output_path: str | Path, cfg: AicrushConfig | None = None) -> Path:
    """Write the pipeline for ``cfg`` (default: the ``tiny`` preset) as KFP IR YAML to ``output_path``."""
    cfg = cfg or build_config()
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_training_pipeline(cfg), package_path=str(out))
    return out
