"""The MLflow side of a rollout: which version is champion, and what happened to each deployment.

The alias ``champion`` names the version serving the stable traffic; it moves only after the
backend serves the promoted version at 100 %. Each version deployed as a canary carries tags:
``rollout.outcome`` (canary / promoted / rolled_back / replaced / stopped), ``rollout.traffic`` (percent),
``rollout.deployed_at`` / ``rollout.updated_at`` (UTC ISO time), ``rollout.rollback_reason``, and
``rollout.history`` (the last events as JSON, with time, backend, traffic and outcome of each).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from serving.rollout.machine import ModelRef, VersionNotFound, fit_json_list

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG = "rollout."
HISTORY_EVENTS = 20
#: Longest ``rollout.history`` value: under the 5,000 characters a SQL-backed registry column holds.
HISTORY_MAX_CHARS = 4900


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class MlflowRolloutRegistry:
    """Rollout bookkeeping on one registered model through ``MlflowClient``."""

    def __init__(
        self, tracking_uri: str, model_name: str, backend: str = "local", client: Any = None
    ):
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.backend = backend
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import mlflow

            # No mlflow.set_tracking_uri here: that would redirect every later MLflow call of
            # the process. A ModelRef carries the tracking URI its download URI resolves against.
            self._client = mlflow.MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def _ref(self, mv: Any) -> ModelRef:
        version = str(mv.version)
        return ModelRef(
            version,
            self.client.get_model_version_download_uri(self.model_name, version),
            self.tracking_uri,
        )

    def _by_alias(self, alias: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException as err:
            if err.error_code in (
                "RESOURCE_DOES_NOT_EXIST",
                "INVALID_PARAMETER_VALUE",
                "NOT_FOUND",
            ):
                return None
            raise

    def champion(self) -> ModelRef | None:
        mv = self._by_alias(CHAMPION)
        return self._ref(mv) if mv is not None else None

    def challenger_version(self) -> str | None:
        mv = self._by_alias(CHALLENGER)
        return str(mv.version) if mv is not None else None

    def resolve(self, version: str | None) -> ModelRef:
        """The version to roll out: ``version`` (a number or an alias), default alias
        ``challenger``. Raises :class:`VersionNotFound` listing the versions and aliases there
        are (:func:`aicrush.registry.find_version`)."""
        from aicrush.registry import ModelVersionNotFound, describe_registered, find_version

        if version is None or str(version) == "":
            mv = self._by_alias(CHALLENGER)
            if mv is None:
                raise VersionNotFound(
                    f"{self.model_name} has no alias '{CHALLENGER}' in {self.tracking_uri}: "
                    f"{describe_registered(self.tracking_uri, self.model_name)}; pass --version N "
                    "or register a model first (aicrush run)"
                )
            return self._ref(mv)
        try:
            return self._ref(find_version(self.tracking_uri, self.model_name, str(version)))
        except ModelVersionNotFound as err:
            raise VersionNotFound(f"{err}; pass --version with one of them") from None

    def tags(self, version: str) -> dict[str, str]:
        mv = self.client.get_model_version(self.model_name, str(version))
        return {k: v for k, v in (mv.tags or {}).items() if k.startswith(TAG)}

    def _record(
        self, version: str, event: str, history_only: dict[str, Any] | None = None, **tags: Any
    ) -> None:
        """Set the latest-state tags and append the event to ``rollout.history`` (one REST call per tag:
        MLflow has no batch call for version tags, so the set is kept small)."""
        current = self.tags(version)
        try:
            history = json.loads(current.get(TAG + "history", "[]"))
        except ValueError:  # a tag cut by an older version: start the log again
            history = []
        if not isinstance(history, list):
            history = []
        now = _now()
        entry = {"time": now, "event": event, "backend": self.backend}
        entry.update({k: str(v) for k, v in {**tags, **(history_only or {})}.items()})
        values = {"updated_at": now, **tags}
        if event == "canary" and current.get(TAG + "outcome") != "canary":
            values["deployed_at"] = now  # this deployment's start, not the version's first one
        if event in ("canary", "promoted") and TAG + "rollback_reason" in current:
            # The reason of an earlier rollback no longer describes the version's state.
            self.client.delete_model_version_tag(self.model_name, version, TAG + "rollback_reason")
        for key, value in values.items():
            if current.get(TAG + key) != str(value):
                self.client.set_model_version_tag(
                    self.model_name, version, TAG + key, str(value)[:4000]
                )
        self.client.set_model_version_tag(
            self.model_name,
            version,
            TAG + "history",
            fit_json_list([*history, entry][-HISTORY_EVENTS:], HISTORY_MAX_CHARS),
        )

    def record_traffic(self, version: str, percent: int, outcome: str) -> None:
        self._record(version, outcome, traffic=percent, outcome=outcome)

    def record_promotion(self, version: str, previous: str | None) -> None:
        # The alias first: it is the contract ("champion serves the stable traffic"); tags are the log.
        self.client.set_registered_model_alias(self.model_name, CHAMPION, str(version))
        self._record(
            version, "promoted", {"previous": previous or ""}, traffic=100, outcome="promoted"
        )
        if previous and previous != version:
            self._record(
                previous, "replaced", {"replaced_by": version}, traffic=0, outcome="replaced"
            )

    def record_rollback(self, version: str, reason: str) -> None:
        self._record(
            version, "rolled_back", traffic=0, outcome="rolled_back", rollback_reason=reason
        )
