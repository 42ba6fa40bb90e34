"""Fixtures of the drift monitor tests: a real-file corpus split into reference and traffic pool."""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.monitor.reference import Reference, reference_from_frame
from serving.monitor.service import Monitor, MonitorConfig
from serving.monitor.windows import WindowPolicy
from tests.monitor.corpus import reference_frame, source_files

MODEL, VERSION = "aicrush-code-language", "3"


@pytest.fixture(scope="session")
def corpus() -> pd.DataFrame:
    """Real files of this environment (Python, C, JavaScript, CSS, JSON) with their features."""
    files = source_files().reset_index(drop=True)
    frame = reference_frame(files)
    frame["text"] = files["text"]
    return frame


@pytest.fixture(scope="session")
def split(corpus: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference half, traffic pool half): two random halves of the same mixed corpus."""
    order = np.random.default_rng(1).permutation(len(corpus))
    half = len(corpus) // 2
    return corpus.iloc[order[:half]].reset_index(drop=True), corpus.iloc[order[half:]].reset_index(
        drop=True
    )


@pytest.fixture(scope="session")
def reference(split: tuple[pd.DataFrame, pd.DataFrame]) -> Reference:
    return reference_from_frame(split[0].drop(columns=["text"]), MODEL, VERSION, "test-corpus")


def make_monitor(
    state_dir: Path, reference: Reference | None, max_rows: int = 400, **kw
) -> Monitor:
    config = MonitorConfig(
        state_dir=state_dir, policy=WindowPolicy(max_rows=max_rows), background=False, **kw
    )
    return Monitor(config, references=[reference] if reference else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def runtime_warnings_raise() -> Iterator[None]:
    """Every RuntimeWarning (numpy's "invalid value encountered in divide", ...) raises.

    ``python -W error::RuntimeWarning`` is not enough: Feast's modules run
    ``warnings.simplefilter("once", RuntimeWarning)`` when imported, which puts their filter first.
    So the libraries are imported before the filter goes in, and the test fails if one was
    imported later all the same (the filter would no longer be the one that applies).
    """
    import evidently.presets  # noqa: F401

    from serving.monitor.cli import quiet_libraries
    from serving.monitor.features import features_of

    quiet_libraries()
    features_of(["import what the feature path imports"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield
        applies = next(f for f in warnings.filters if issubclass(RuntimeWarning, f[2]))
        assert applies[0] == "error", f"a library import replaced the error filter: {applies}"
