"""Request decoding shared by the model server and the drift monitor: one reader of every input
layout the server accepts, so the monitor sees exactly the texts the model saw.

Everything here is a pure function that raises ``kserve.errors.InvalidInput`` (HTTP 400, gRPC
INVALID_ARGUMENT) with a message that says what is wrong and what to send instead:

- :func:`texts_from_v1`: ``{"instances": [{"text": "..."} | "...", ...]}``;
- :func:`texts_from_v2`: an Open Inference Protocol request (REST JSON, REST binary extension
  after :func:`decode_binary_body`, or gRPC with ``contents`` or ``raw_input_contents``), input
  ``text``, datatype BYTES, shape ``[N]`` or ``[N, 1]``, data flat or nested as the shape says;
- :func:`output_plan`: which outputs the request asked for, and in which encoding;
- :func:`decode_binary_body`: the binary data extension (``Inference-Header-Content-Length``)
  turned into the equivalent JSON request, every length, size and shape checked;
- :func:`deserialize_bytes`: one BYTES tensor in its binary form (4-byte little-endian length,
  then the bytes, per element), checked;
- :func:`texts_of_logged_request`: the texts of a logged request body (V1 or V2 JSON), read by
  the two functions above.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, to_http_parameters

INPUT_NAME = "text"
OUTPUT_NAMES = ("label", "score", "probabilities")
DEFAULT_OUTPUTS = ("label", "score")
PROBABILITIES_PARAMETER = "return_probabilities"
BINARY_OUTPUT_PARAMETER = "binary_data_output"
REQUEST_PARAMETERS = (PROBABILITIES_PARAMETER, BINARY_OUTPUT_PARAMETER)
"""Request-level ``parameters`` the server understands; any other is refused with 400."""
INPUT_PARAMETERS = ("binary_data_size",)
OUTPUT_PARAMETERS = ("binary_data",)
MAX_BATCH_ITEMS = 1024
"""Most texts one request may carry (a larger shape is refused with 400, before any work)."""

# The numeric datatypes of the Open Inference Protocol and their little-endian numpy types; only
# used to decode (and then refuse with the right message) binary inputs that are not BYTES.
_NUMPY_TYPES = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
BINARY_HEADER = "inference-header-content-length"


@dataclass(frozen=True)
class OutputPlan:
    """The outputs to return, in order, and whether each is sent in binary (REST only)."""

    names: tuple[str, ...] = DEFAULT_OUTPUTS
    binary: tuple[bool, ...] = (False, False)
    explicit: bool = False  # the request listed its outputs

    @property
    def probabilities(self) -> bool:
        return "probabilities" in self.names


# --------------------------------------------------------------------------- texts


def json_type(value: Any) -> str:
    """The JSON name of a Python value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | np.number):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, str | bytes):
        return "string"
    return type(value).__name__


def check_text(item: Any, where: str) -> str:
    """``item`` as a ``str`` (UTF-8 bytes are decoded), or InvalidInput naming ``where``."""
    if isinstance(item, bytes):
        try:
            item = item.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"{where} is not valid UTF-8: {exc.reason} at byte {exc.start}"
            ) from None
    if not isinstance(item, str):
        raise InvalidInput(f"{where} must be a string, got {json_type(item)}")
    try:
        item.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            f"{where} contains a lone surrogate (not valid Unicode); send UTF-8 text"
        ) from None
    return item


def check_count(n: int) -> None:
    if n == 0:
        raise InvalidInput("empty batch: send at least one text")
    if n > MAX_BATCH_ITEMS:
        raise InvalidInput(f"too many texts in one request: {n} > {MAX_BATCH_ITEMS}")


def parse_json_body(body: bytes | str) -> Any:
    """Parse a JSON request body, with 400-style errors for bad UTF-8 and bad JSON."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"request body is not valid UTF-8 ({exc.reason} at byte {exc.start})"
            ) from None
    try:
        return json.loads(body)
    except RecursionError:
        raise InvalidInput("request body is nested too deeply") from None
    except ValueError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None


def texts_from_v1(payload: Any) -> list[str]:
    """Texts of a V1 body ``{"instances": [{"text": "..."} | "...", ...]}``."""
    if isinstance(payload, bytes | str):
        payload = parse_json_body(payload)
    if not isinstance(payload, dict):
        raise InvalidInput(
            f'request body must be a JSON object {{"instances": [...]}}, got {json_type(payload)}'
        )
    extra = sorted(set(payload) - {"instances"})
    if extra:
        raise InvalidInput(f"unexpected key(s) {extra} in V1 request; only 'instances' is allowed")
    if "instances" not in payload:
        raise InvalidInput('missing "instances": send {"instances": [{"text": "..."}]}')
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidInput(f'"instances" must be a list, got {json_type(instances)}')
    check_count(len(instances))
    texts = []
    for i, inst in enumerate(instances):
        if isinstance(inst, dict):
            keys = set(inst)
            if keys != {INPUT_NAME}:
                missing = "" if INPUT_NAME in keys else f"missing key '{INPUT_NAME}'"
                extra_keys = sorted(keys - {INPUT_NAME})
                extra_msg = f"unexpected key(s) {extra_keys}" if extra_keys else ""
                raise InvalidInput(
                    f"instances[{i}]: " + "; ".join(m for m in (missing, extra_msg) if m)
                )
            inst = inst[INPUT_NAME]
            where = f"instances[{i}].text"
        else:
            where = f"instances[{i}]"
        texts.append(check_text(inst, where))
    return texts


def _parameters(params: Any, where: str) -> dict[str, Any]:
    if not params:
        return {}
    if isinstance(params, Mapping) and all(not hasattr(v, "HasField") for v in params.values()):
        return dict(params)
    if isinstance(params, Mapping):
        return to_http_parameters(params)
    raise InvalidInput(f"{where} must be an object, got {json_type(params)}")


def _check_known(params: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InvalidInput(
            f"unsupported {where} {unknown}; this model understands {list(known) or 'none'}"
        )


def _check_bool(params: Mapping[str, Any], key: str, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where} '{key}' must be a boolean, got {value!r}")
    return value


def check_shape(shape: Any, name: str = INPUT_NAME) -> list[int]:
    """The shape as a list of ints ``[N]`` or ``[N, 1]``, N <= MAX_BATCH_ITEMS."""
    if not isinstance(shape, list | tuple):
        raise InvalidInput(f"input '{name}' shape must be a list of integers, got {shape!r}")
    shape = list(shape)
    for dim in shape:
        if not isinstance(dim, int | np.integer) or isinstance(dim, bool) or dim < 0:
            raise InvalidInput(f"input '{name}' has an invalid dimension {dim} in {shape}")
    if not shape or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise InvalidInput(f"input '{name}' must have shape [N] or [N, 1], got {shape}")
    if shape[0] > MAX_BATCH_ITEMS:
        raise InvalidInput(
            f"input '{name}' shape {shape} is too large: at most {MAX_BATCH_ITEMS} texts"
        )
    return [int(d) for d in shape]


def flatten_as_shape(data: Any, shape: Sequence[int], name: str = INPUT_NAME) -> list[Any]:
    """The elements of tensor ``data`` in row-major order, checked against ``shape``.

    The Open Inference Protocol allows the data flat (``[a, b]`` for shape ``[2, 1]``) or nested
    as the shape says (``[[a], [b]]``); anything else (ragged, deeper or shallower nesting, a
    count that does not match) is refused, naming the first place where it goes wrong.
    """
    n = math.prod(shape)
    if not isinstance(data, list | tuple):
        raise InvalidInput(f"input '{name}' data must be a list, got {json_type(data)}")
    if not any(isinstance(x, list | tuple) for x in data):  # flat
        if len(data) != n:
            raise InvalidInput(
                f"input '{name}' shape {list(shape)} says {n} text(s) but the data holds {len(data)}"
            )
        return list(data)
    out: list[Any] = []

    def walk(node: Any, depth: int, where: str) -> None:
        if depth == len(shape):
            if isinstance(node, list | tuple):
                raise InvalidInput(
                    f"input '{name}' data{where} is nested deeper than shape {list(shape)}"
                )
            out.append(node)
            return
        if not isinstance(node, list | tuple) or len(node) != shape[depth]:
            got = f"{len(node)} element(s)" if isinstance(node, list | tuple) else json_type(node)
            raise InvalidInput(
                f"input '{name}' data{where or ''} does not match shape {list(shape)}: "
                f"dimension {depth} wants {shape[depth]} element(s), got {got}; send the data "
                "flat or nested exactly as the shape says"
            )
        for i, child in enumerate(node):
            walk(child, depth + 1, f"{where}[{i}]")

    walk(data, 0, "")
    return out


def raw_contents(inp: Any) -> bytes | None:
    """The binary contents of a gRPC input (``raw_input_contents``), or None.

    KServe's ``InferRequest`` keeps them on the private ``_raw_data`` of each input and offers only
    ``as_numpy()`` (which fails with struct/reshape errors on malformed data) to read them; this is
    the one place that reads the private name (tests/serving/test_decoding.py fails if it moves).
    """
    return getattr(inp, "_raw_data", None)


def texts_from_v2(request: InferRequest) -> tuple[list[str], bool]:
    """Texts of a V2 request (input ``text``, BYTES, shape ``[N]`` or ``[N, 1]``), and whether
    probabilities were asked for. Also validates the request's ``parameters`` and ``outputs``
    (see :func:`output_plan`)."""
    names = [inp.name for inp in request.inputs]
    if INPUT_NAME not in names:
        raise InvalidInput(
            f"missing input '{INPUT_NAME}' (got {names or 'no inputs'}); "
            f"send one input named '{INPUT_NAME}' with datatype BYTES"
        )
    if len(names) != 1:
        raise InvalidInput(
            f"unexpected input(s) {[n for n in names if n != INPUT_NAME] or names}; "
            f"the model takes one input, '{INPUT_NAME}'"
        )
    inp = request.inputs[0]
    if inp.datatype != "BYTES":
        raise InvalidInput(f"input '{INPUT_NAME}' must have datatype BYTES, got {inp.datatype}")
    shape = check_shape(inp.shape)
    params = _parameters(inp.parameters, f"input '{INPUT_NAME}' parameters")
    _check_known(params, INPUT_PARAMETERS, f"input '{INPUT_NAME}' parameter(s)")
    raw = raw_contents(inp)
    if raw is not None:
        items: list[Any] = deserialize_bytes(raw, f"input '{INPUT_NAME}' raw contents")
        n = math.prod(shape)
        if len(items) != n:
            raise InvalidInput(
                f"input '{INPUT_NAME}' shape {shape} says {n} text(s) but the raw contents "
                f"hold {len(items)}"
            )
    else:
        data = inp.data
        if data is not None and not isinstance(data, list | tuple):
            data = list(data)  # gRPC repeated contents
        items = flatten_as_shape(data if data is not None else [], shape)
    check_count(len(items))
    texts = [check_text(item, f"{INPUT_NAME}[{i}]") for i, item in enumerate(items)]
    return texts, output_plan(request).probabilities


def output_plan(request: InferRequest) -> OutputPlan:
    """Which outputs to answer, in which order, binary or not.

    Without ``outputs``: ``label`` and ``score``, plus ``probabilities`` when the parameter
    ``return_probabilities`` is true; all binary when ``binary_data_output`` is true. With
    ``outputs``: exactly those, in that order, each binary when its ``binary_data`` parameter says
    so (else ``binary_data_output``). Unknown names, repeats and unknown parameters are refused.
    """
    params = _parameters(request.parameters, "request parameters")
    _check_known(params, REQUEST_PARAMETERS, "request parameter(s)")
    want_probs = _check_bool(params, PROBABILITIES_PARAMETER, "parameter")
    binary_default = _check_bool(params, BINARY_OUTPUT_PARAMETER, "parameter")
    requested = request.request_outputs or []
    if not requested:
        names = (*DEFAULT_OUTPUTS, "probabilities") if want_probs else DEFAULT_OUTPUTS
        return OutputPlan(names, tuple(binary_default for _ in names))
    names_out: list[str] = []
    binary: list[bool] = []
    for out in requested:
        if out.name not in OUTPUT_NAMES:
            raise InvalidInput(f"unknown output '{out.name}'; outputs are {list(OUTPUT_NAMES)}")
        if out.name in names_out:
            raise InvalidInput(f"output '{out.name}' is requested twice")
        oparams = _parameters(out.parameters, f"output '{out.name}' parameters")
        _check_known(oparams, OUTPUT_PARAMETERS, f"output '{out.name}' parameter(s)")
        is_binary = (
            _check_bool(oparams, "binary_data", f"output '{out.name}' parameter")
            if "binary_data" in oparams
            else binary_default
        )
        names_out.append(out.name)
        binary.append(is_binary)
    if want_probs and "probabilities" not in names_out:
        raise InvalidInput(
            f"parameter '{PROBABILITIES_PARAMETER}' is true but 'outputs' does not list "
            "'probabilities'; add it to 'outputs' or drop the parameter"
        )
    return OutputPlan(tuple(names_out), tuple(binary), explicit=True)


# --------------------------------------------------------------------------- binary forms


def deserialize_bytes(raw: bytes, where: str) -> list[bytes]:
    """The elements of a BYTES tensor in binary form (per element: a 4-byte little-endian length,
    then that many bytes), or InvalidInput saying which element is malformed."""
    items: list[bytes] = []
    offset, size = 0, len(raw)
    while offset < size:
        if size - offset < 4:
            raise InvalidInput(
                f"{where}: {size - offset} byte(s) left at offset {offset} cannot hold the 4-byte "
                f"length of element {len(items)}; each BYTES element is a 4-byte little-endian "
                "length followed by that many bytes"
            )
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if length > size - offset:
            raise InvalidInput(
                f"{where}: element {len(items)} declares {length} bytes but only "
                f"{size - offset} remain"
            )
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    return items


def _binary_elements(chunk: bytes, datatype: str, where: str) -> list[Any]:
    if datatype == "BYTES":
        elements = deserialize_bytes(chunk, where)
        out: list[Any] = []
        for i, e in enumerate(elements):
            try:
                out.append(e.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise InvalidInput(
                    f"{where}: element {i} is not valid UTF-8: {exc.reason} at byte {exc.start}"
                ) from None
        return out
    dtype = _NUMPY_TYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(f"{where}: unknown datatype {datatype!r}")
    itemsize = np.dtype(dtype).itemsize
    if len(chunk) % itemsize:
        raise InvalidInput(
            f"{where}: {len(chunk)} bytes is not a whole number of {datatype} elements "
            f"({itemsize} bytes each)"
        )
    return np.frombuffer(chunk, dtype=dtype).tolist()


def decode_binary_body(body: bytes, header_length: str | None) -> dict[str, Any]:
    """A V2 REST request in the binary data extension, as the equivalent JSON request (a dict).

    ``header_length`` is the ``Inference-Header-Content-Length`` header: the JSON part is
    ``body[:header_length]``; each input without ``data`` carries ``parameters.binary_data_size``
    bytes of the rest, in input order. Every length is checked: a header that is not a number or
    is past the end, a ``binary_data_size`` past the end, a BYTES element whose 4-byte length runs
    past its tensor, a numeric tensor whose size is not a multiple of its element size, an element
    count that does not match the shape, and bytes that no input claims all raise InvalidInput.
    """
    if header_length is None or not header_length.strip().isdigit():
        raise InvalidInput(
            f"Inference-Header-Content-Length must be the byte length of the JSON part, "
            f"got {header_length!r}"
        )
    json_length = int(header_length)
    if json_length > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length is {json_length} but the body has only "
            f"{len(body)} bytes"
        )
    try:
        request = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            f"the JSON part of the binary request (first {json_length} bytes, per "
            f"Inference-Header-Content-Length) is not valid JSON: {exc}"
        ) from None
    if not isinstance(request, dict):
        raise InvalidInput(f"the JSON part must be an object, got {json_type(request)}")
    inputs = request.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidInput(f"'inputs' must be a list, got {json_type(inputs)}")
    offset = json_length
    for i, inp in enumerate(inputs):
        if not isinstance(inp, dict):
            raise InvalidInput(f"inputs[{i}] must be an object, got {json_type(inp)}")
        name = inp.get("name", f"#{i}")
        params = inp.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput(f"input '{name}' parameters must be an object")
        if "data" in inp:
            if "binary_data_size" in params:
                raise InvalidInput(
                    f"input '{name}' has both 'data' and parameters.binary_data_size; send one"
                )
            continue
        size = params.get("binary_data_size")
        if size is None:
            raise InvalidInput(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(
                f"input '{name}' binary_data_size must be a non-negative integer, got {size!r}"
            )
        if offset + size > len(body):
            raise InvalidInput(
                f"input '{name}' binary_data_size is {size} but only {len(body) - offset} "
                "byte(s) of binary data follow"
            )
        datatype = str(inp.get("datatype", "")).upper()
        elements = _binary_elements(body[offset : offset + size], datatype, f"input '{name}'")
        shape = inp.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise InvalidInput(
                f"input '{name}' shape must be a list of non-negative integers, got {shape!r}"
            )
        if len(elements) != math.prod(shape):
            raise InvalidInput(
                f"input '{name}' shape {shape} says {math.prod(shape)} element(s) but its "
                f"{size} bytes of binary data hold {len(elements)}"
            )
        offset += size
        rest = {k: v for k, v in params.items() if k != "binary_data_size"}
        inp.pop("parameters", None)
        if rest:
            inp["parameters"] = rest
        inp["data"] = elements
    if offset != len(body):
        raise InvalidInput(
            f"{len(body) - offset} byte(s) after the last binary input are not claimed by any "
            "input's binary_data_size"
        )
    return request


# --------------------------------------------------------------------------- logged bodies


def v2_request_from_dict(body: Mapping[str, Any], model_name: str = "model") -> InferRequest:
    """A KServe ``InferRequest`` from a V2 JSON body (a dict), validated like KServe's REST app
    does (its pydantic ``InferenceRequest``); InvalidInput when it does not fit the protocol."""
    from kserve.protocol.rest.v2_datamodels import InferenceRequest
    from pydantic import ValidationError

    try:
        parsed = InferenceRequest.model_validate(body)
    except ValidationError as exc:
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        raise InvalidInput("invalid V2 inference request: " + "; ".join(parts)) from None
    return InferRequest.from_inference_request(parsed, model_name)


def texts_of_logged_request(body: Any) -> list[str]:
    """The texts of a logged request body, read exactly as the server reads them.

    V1 bodies go through :func:`texts_from_v1`; V2 bodies (``inputs``) through
    :func:`v2_request_from_dict` and :func:`texts_from_v2`. Raises InvalidInput otherwise.
    """
    if isinstance(body, dict) and "inputs" in body:
        return texts_from_v2(v2_request_from_dict(body))[0]
    if isinstance(body, dict) and "instances" in body:
        return texts_from_v1(body)
    raise InvalidInput(
        "request body is neither V1 {'instances': [...]} nor V2 {'inputs': [...]}, "
        f"got {json_type(body)}"
        + (f" with keys {sorted(body)[:5]}" if isinstance(body, dict) else "")
    )
