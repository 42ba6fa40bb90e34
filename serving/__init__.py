"""Serving: the KServe model server, canary rollout backends and the drift monitor."""
