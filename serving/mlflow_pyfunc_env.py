"""The environment an aicrush MLflow pyfunc declares: requirements any package index serves.

``aicrush`` itself is not on a package index, so it is never a pip requirement. The one piece of
it the pyfunc (:mod:`serving.mlflow_pyfunc`) imports, the kernel package ``aicrush`` (model folder
loading and the text window), travels with the model as MLflow ``code_paths``; the requirements
are the libraries it imports, pinned to the versions that trained it (local version labels such
as torch's ``+cpu`` dropped, since indexes serve plain versions).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: Distributions the pyfunc imports at load and predict time (MLflow adds itself).
PYFUNC_DISTRIBUTIONS = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas")


def pip_requirements() -> list[str]:
    """``name==version`` of each of :data:`PYFUNC_DISTRIBUTIONS` installed here."""
    out = []
    for dist in PYFUNC_DISTRIBUTIONS:
        try:
            out.append(f"{dist}=={version(dist).split('+', 1)[0]}")
        except PackageNotFoundError:
            continue
    return out


def code_paths() -> list[str]:
    """The kernel package folder, copied into the model so loading needs no aicrush install."""
    import aicrush

    return [str(Path(aicrush.__file__).resolve().parent)]
