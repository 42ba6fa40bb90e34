"""Closed-loop gRPC load for bench_serving.py: the Open Inference Protocol's ``ModelInfer`` over
KServe's gRPC server, as ``wrk`` loads its REST one.

``python -m benchmarks.serving.grpc_load HOST:PORT [--concurrency 32] [--duration 2]``: opens
``concurrency`` channels (one HTTP/2 connection each, as wrk opens one TCP connection per
connection slot), each sending one request at a time for ``duration`` seconds, rotating the same
64 ~1 KB standard-library snippets as the REST load (one BYTES tensor ``text`` of shape [1] per
request). Prints one line ``JSON {"rps": ..., "p50_ms": ..., "p99_ms": ..., "errors": ...,
"non2xx": 0}`` in wrk's script's format; ``errors`` counts calls that did not end with status OK.

The client is Python (grpcio's asyncio API), so it costs more CPU a request than wrk: run it on
cores the server does not use, and read a figure near its own ceiling as a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time


def request_messages(model: str) -> list[bytes]:
    """Serialized ``ModelInferRequest``s, one per snippet (serialized once: the client's cost per
    call is then the call alone)."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    from benchmarks.serving.model import code_snippets

    out = []
    for text in code_snippets(64, 1024):
        req = pb.ModelInferRequest(model_name=model)
        tensor = req.inputs.add(name="text", datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(text.encode())
        out.append(req.SerializeToString())
    return out


async def load(target: str, model: str, concurrency: int, duration: float) -> dict[str, float]:
    """Requests/s, p50 and p99 latency (ms) and failed calls of ``concurrency`` closed loops."""
    import grpc

    bodies = request_messages(model)
    method = "/inference.GRPCInferenceService/ModelInfer"
    latencies: list[float] = []
    errors = 0
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(concurrency)
    ]
    calls = [
        ch.unary_unary(method, request_serializer=None, response_deserializer=None)
        for ch in channels
    ]

    async def loop(i: int, until: float) -> None:
        nonlocal errors
        n = i
        while time.perf_counter() < until:
            start = time.perf_counter()
            try:
                await calls[i](bodies[n % len(bodies)], timeout=10)
                latencies.append(time.perf_counter() - start)
            except grpc.RpcError:
                errors += 1
            n += concurrency

    try:
        # warm: every channel connected before the clock starts; a call the server refuses here
        # (no such model, nothing listening) ends the run with its status, not a figure
        try:
            await asyncio.gather(*(c(bodies[0], timeout=30) for c in calls))
        except grpc.RpcError as err:
            raise SystemExit(
                f"{target}: ModelInfer of model {model!r} failed: {err.code().name}: {err.details()}"
            ) from None
        start = time.perf_counter()
        await asyncio.gather(*(loop(i, start + duration) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))
    ms = sorted(x * 1e3 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else float("nan")
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(ms) if ms else float("nan"),
        "p99_ms": p99,
        "errors": errors,
        "non2xx": 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("target", help="HOST:PORT of the gRPC server")
    ap.add_argument("--model", default="aicrush", help="model name (default aicrush)")
    ap.add_argument("--concurrency", type=int, default=32, help="closed loops (default 32)")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds (default 2)")
    args = ap.parse_args()
    if args.concurrency < 1 or args.duration <= 0:
        ap.error("--concurrency must be >= 1 and --duration > 0")
    result = asyncio.run(load(args.target, args.model, args.concurrency, args.duration))
    print("JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
