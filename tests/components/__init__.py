"""Helpers shared by the component tests."""

from __future__ import annotations

from pathlib import Path


class FakeArtifact:
    """What a KFP component body uses of an artifact: ``path``, ``metadata``, ``log_metric``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.metadata: dict = {}
        self.metrics: dict[str, float] = {}

    def log_metric(self, name: str, value: float) -> None:
        self.metrics[name] = value
