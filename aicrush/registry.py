"""MLflow registry access shared by the pipeline steps, the model server and the rollout.

One registered model (``registry.model_name``), versions addressed by number or by the aliases
``champion`` (serves the stable traffic) and ``challenger`` (the newest candidate).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aicrush.errors import google_credentials

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Version tag: "incomplete" from the version's creation until its tags are set, then "complete".
#: A registration that stopped part-way deletes its version; one left "incomplete" (the cleanup
#: itself failed) is never picked as "the latest" and is replaced by the retried step.
REGISTRATION_TAG = "aicrush.registration"
INCOMPLETE = "incomplete"
MODEL_ARTIFACT = "model"  # the pyfunc artifact that holds the aicrush model folder
REFERENCE_ARTIFACT = "reference/reference.parquet"


def client(tracking_uri: str):  # -> mlflow.MlflowClient (import kept out of module import time)
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextmanager
def tracking(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (start_run, log_model, models:/ URIs) at ``tracking_uri`` for a block.

    ``mlflow.set_tracking_uri``/``set_registry_uri`` also write ``$MLFLOW_TRACKING_URI`` and
    ``$MLFLOW_REGISTRY_URI``, and reading the URIs back gives derived values, so restoring through
    the public API would pin them. The module state and both variables are restored exactly, so
    one call cannot redirect later ones in the same process.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_state
    from mlflow.tracking._tracking_service import utils as tracking_state

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {name: os.environ.get(name) for name in names}
    saved = (tracking_state._tracking_uri, registry_state._registry_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        # None (was unset) is accepted at run time: mlflow then unsets it and resets its tracer.
        mlflow.set_tracking_uri(saved[0])  # type: ignore[arg-type]
        registry_state._registry_uri = saved[1]
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    path: (
        Path  # local folder holding the aicrush model (see aicrush.model_folder.resolve_model_dir)
    )
    run_id: str


def get_version(
    tracking_uri: str, name: str, alias: str | None = None, version: str | int | None = None
):
    """The ModelVersion for an alias or a version number, or None when there is none."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        if version is not None and str(version) != "":
            return c.get_model_version(name, str(version))
        return c.get_model_version_by_alias(name, alias or CHAMPION)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def download_model(
    tracking_uri: str,
    name: str,
    alias: str | None = None,
    version: str | int | None = None,
    *,
    dst: Path,
) -> ResolvedModel | None:
    """Download a registered version (by alias or number) into ``dst``; None if there is none.

    ``dst`` is the caller's: it is created if missing and never removed here, so a caller that
    only needs the model for a while passes a ``tempfile.TemporaryDirectory`` (a copy of a model
    is hundreds of MB; a folder of its own per call would pile up in /tmp).

    Returns where the model folder is inside ``dst``. Raises ``CredentialsError`` when the
    artifacts are in gs:// and no Google credentials are found.
    """
    import mlflow

    from aicrush.model_folder import resolve_model_dir

    mv = get_version(tracking_uri, name, alias=alias, version=version)
    if mv is None:
        return None
    dst.mkdir(parents=True, exist_ok=True)
    # models:/ URIs resolve through the registry URI; artifacts in gs:// need Google credentials
    with (
        tracking(tracking_uri),
        google_credentials(f"{name} version {mv.version} ({mv.source})"),
    ):
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(dst)
        )
    return ResolvedModel(name, str(mv.version), resolve_model_dir(local), mv.run_id or "")


def model_uri(name: str, alias: str | None = None, version: str | int | None = None) -> str:
    return f"models:/{name}/{version}" if version else f"models:/{name}@{alias or CHAMPION}"


#: The order a command tries when given no alias and no version (``aicrush serve``, ``drift``,
#: ``monitor``): the champion, else the challenger (what ``make demo`` registers), else the latest.
DEFAULT_ALIAS_ORDER = (CHAMPION, CHALLENGER)


class ModelVersionNotFound(LookupError):
    """A registered model, alias or version that is not in the store; the message lists what is."""


def describe_registered(tracking_uri: str, name: str) -> str:
    """What the store holds for ``name``: ``"versions 1, 2; aliases challenger -> v2"``, or a
    sentence saying the model is not registered there (run ``aicrush run`` first)."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        model = c.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in c.search_registered_models())
        there = f"models there: {', '.join(names)}" if names else "the store holds no model"
        return (
            f"no registered model {name!r} in {tracking_uri} ({there}); run `aicrush run` to "
            "train and register one, or point --state-dir / --tracking-uri at the store it used"
        )
    found = sorted(c.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    if not found:
        return (
            f"registered model {name!r} in {tracking_uri} has no versions (a registration "
            "stopped before completing one); run `aicrush run` to register one"
        )
    versions = ", ".join(f"{v.version}{' (incomplete)' if is_incomplete(v) else ''}" for v in found)
    aliases = ", ".join(f"{a} -> v{v}" for a, v in sorted(model.aliases.items())) or "none"
    return f"versions {versions}; aliases {aliases}"


def is_incomplete(mv) -> bool:
    """Whether the ModelVersion ``mv`` is still tagged :data:`INCOMPLETE` (never served)."""
    return (mv.tags or {}).get(REGISTRATION_TAG) == INCOMPLETE


def find_version(tracking_uri: str, name: str, selector: str | int | None = None):
    """The ModelVersion that ``selector`` names: a version number, an alias, or (None) the first
    of :data:`DEFAULT_ALIAS_ORDER` that is set, else the latest complete version.

    Raises :class:`ModelVersionNotFound` naming the versions and aliases there are.
    """
    if selector is not None and str(selector) != "":
        text = str(selector)
        mv = get_version(
            tracking_uri, name, **({"version": text} if text.isdigit() else {"alias": text})
        )
        if mv is None:
            raise ModelVersionNotFound(
                f"{name} has no {'version' if text.isdigit() else 'alias'} {text!r} in "
                f"{tracking_uri}: {describe_registered(tracking_uri, name)}"
            )
        return mv
    for alias in DEFAULT_ALIAS_ORDER:
        mv = get_version(tracking_uri, name, alias=alias)
        if mv is not None:
            return mv
    from mlflow.exceptions import MlflowException

    try:
        versions = client(tracking_uri).search_model_versions(f"name='{name}'")
    except MlflowException:
        versions = []
    versions = [v for v in versions if not is_incomplete(v)]
    if not versions:
        raise ModelVersionNotFound(describe_registered(tracking_uri, name))
    return max(versions, key=lambda v: int(v.version))
