"""Serving: the KServe model server, canary rollout backends and the drift monitor."""

#: The one request-body limit of the model server (REST and gRPC, ``--max_body_bytes``) and of
#: the local rollout proxy in front of it: KServe's gRPC message limit (MAX_GRPC_MESSAGE_LENGTH).
#: Here, not in serving.http_guard, so the proxy reads it without importing KServe (1 s, 150 MB).
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
