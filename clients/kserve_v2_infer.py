#!/usr/bin/env python3
"""Query a gliodeploy Triton server with nothing but the Python standard library (KServe v2 HTTP).

Input: a preprocessed volume saved with ``numpy.save`` (float32, ``[x, y, z]`` on the model grid,
brain-masked SUV; see clients/README.md). Output: P(recurrence) and the fold probabilities as JSON.

    python kserve_v2_infer.py volume.npy --url http://localhost:8000
    python kserve_v2_infer.py volume.npy --json-body body.json   # write the request for curl

By default the tensor travels with Triton's binary-tensor extension (raw little-endian bytes after
a JSON header); ``--plain-json`` sends the pure KServe v2 JSON form (a list of numbers, ~4x larger).
"""

from __future__ import annotations

import argparse
import ast
import json
import struct
import sys
import urllib.error
import urllib.request
from array import array

MODEL = "gliodeploy_ensemble"
OUTPUTS = ["probability", "fold_probabilities", "logit"]


def read_npy_float32(path: str) -> tuple[list[int], bytes]:
    """Shape and raw little-endian float32 bytes (C order) of a ``.npy`` file, without numpy."""
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise SystemExit(f"error: {path}: not a .npy file")
        major = fh.read(2)[0]
        (hlen,) = struct.unpack("<H" if major == 1 else "<I", fh.read(2 if major == 1 else 4))
        header = ast.literal_eval(fh.read(hlen).decode("latin1"))
        if header["descr"] != "<f4" or header["fortran_order"]:
            raise SystemExit(f"error: {path}: expected little-endian float32 in C order, got {header}")
        shape = list(header["shape"])
        data = fh.read()
    n = 1
    for s in shape:
        n *= s
    if len(shape) != 3 or len(data) != 4 * n:
        raise SystemExit(f"error: {path}: expected a 3D [x, y, z] volume, got shape {shape}")
    return shape, data


def build_request(shape: list[int], data: bytes, binary: bool) -> tuple[bytes, dict[str, str]]:
    """The HTTP body and headers of one inference request for a batch of one volume."""
    tensor = {"name": "suv", "shape": [1, 1, *shape], "datatype": "FP32"}
    outputs = [{"name": o, "parameters": {"binary_data": False}} for o in OUTPUTS]
    if not binary:
        values = array("f")
        values.frombytes(data)
        if sys.byteorder != "little":
            values.byteswap()
        tensor["data"] = values.tolist()
        body = json.dumps({"inputs": [tensor], "outputs": outputs}).encode()
        return body, {"Content-Type": "application/json"}
    tensor["parameters"] = {"binary_data_size": len(data)}
    header = json.dumps({"inputs": [tensor], "outputs": outputs}).encode()
    return header + data, {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }


def infer(url: str, body: bytes, headers: dict[str, str], model: str, timeout: float) -> dict:
    """POST to ``/v2/models/<model>/infer`` and return the decoded JSON response."""
    req = urllib.request.Request(f"{url.rstrip('/')}/v2/models/{model}/infer", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise SystemExit(f"error: server answered {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise SystemExit(f"error: cannot reach {url}: {exc.reason}") from None


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("volume", help=".npy file: float32 [x, y, z] preprocessed SUV volume")
    ap.add_argument("--url", default="http://localhost:8000")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--plain-json", action="store_true", help="send numbers as JSON instead of binary")
    ap.add_argument("--json-body", metavar="FILE", help="only write the plain-JSON request body (for curl)")
    args = ap.parse_args(argv)
    shape, data = read_npy_float32(args.volume)
    if args.json_body:
        body, _ = build_request(shape, data, binary=False)
        with open(args.json_body, "wb") as fh:
            fh.write(body)
        return 0
    body, headers = build_request(shape, data, binary=not args.plain_json)
    response = infer(args.url, body, headers, args.model, args.timeout)
    out = {o["name"]: o["data"] for o in response["outputs"]}
    print(
        json.dumps(
            {
                "model": response.get("model_name"),
                "model_version": response.get("model_version"),
                "probability": out["probability"][0],
                "fold_probabilities": out["fold_probabilities"],
                "logit": out["logit"][0],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
