"""MLflow URI scoping: a registration must not redirect later MLflow calls in the process."""

from __future__ import annotations

import os

import mlflow
import pytest

from aicrush.config import RegistryConfig
from aicrush.registry import tracking
from aicrush.state import resolve_tracking_uri


def test_tracking_restores_derived_uris_and_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    with tracking("sqlite:////tmp/aicrush-scope-test.db"):
        assert mlflow.get_registry_uri() == "sqlite:////tmp/aicrush-scope-test.db"
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    # The registry URI follows the tracking URI again instead of staying pinned.
    mlflow.set_tracking_uri("http://127.0.0.1:9")
    try:
        assert mlflow.get_registry_uri() == "http://127.0.0.1:9"
    finally:
        mlflow.set_tracking_uri(None)


def test_tracking_uri_precedence(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert (
        resolve_tracking_uri(RegistryConfig(tracking_uri="http://cfg:5000"), tmp_path)
        == "http://cfg:5000"
    )
    assert resolve_tracking_uri(RegistryConfig(), tmp_path) == "http://env:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert (
        resolve_tracking_uri(RegistryConfig(), tmp_path)
        == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    )
