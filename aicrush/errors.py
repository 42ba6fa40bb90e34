"""Errors of the data steps: each message says what is wrong and which setting or input to change."""

from __future__ import annotations


class DataError(ValueError):
    """The data cannot be used as it is (missing source, empty source, too few classes, ...)."""
