"""Deployment profiles (``export/*.toml``): batching, instances, TensorRT and precision choices."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # Python 3.11+; on 3.10 the same parser is the tomli dependency
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - exercised on 3.10
    import tomli as tomllib

from gliodeploy.errors import ConfigError

FORMATS = ("onnx", "torchscript")
TRT_PRECISIONS = ("FP32", "FP16")


@dataclass(frozen=True)
class ExportProfile:
    """How the ensemble is exported and scheduled by Triton.

    One profile fills all three configurations of ``gliodeploy_ensemble`` (``config.pbtxt`` for
    GPU, ``configs/cpu.pbtxt``, ``configs/local.pbtxt``); the profile name only documents intent.
    """

    name: str = "local"
    format: str = "onnx"
    #: Store the ONNX graph in float16 (inputs/outputs stay float32). For GPUs only.
    fp16: bool = False
    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = (2, 4, 8)
    max_queue_delay_microseconds: int = 2000
    gpu_instances: int = 1
    cpu_instances: int = 1
    #: Threads per ONNX Runtime session (0 = ONNX Runtime's default).
    intra_op_threads: int = 0
    tensorrt: bool = True
    tensorrt_precision: str = "FP16"
    tensorrt_workspace_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"profile {self.name!r}: format must be one of {FORMATS}, got {self.format!r}")
        if self.tensorrt_precision not in TRT_PRECISIONS:
            raise ConfigError(
                f"profile {self.name!r}: tensorrt_precision must be one of {TRT_PRECISIONS}, "
                f"got {self.tensorrt_precision!r}"
            )
        if self.max_batch_size < 1:
            raise ConfigError(
                f"profile {self.name!r}: max_batch_size must be >= 1, got {self.max_batch_size}"
            )
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ConfigError(
                f"profile {self.name!r}: preferred_batch_sizes {bad} "
                f"outside 1..max_batch_size={self.max_batch_size}"
            )
        for key in ("max_queue_delay_microseconds", "intra_op_threads"):
            if getattr(self, key) < 0:
                raise ConfigError(f"profile {self.name!r}: {key} must be >= 0")
        for key in ("gpu_instances", "cpu_instances"):
            if getattr(self, key) < 1:
                raise ConfigError(f"profile {self.name!r}: {key} must be >= 1")
        if self.fp16 and self.format != "onnx":
            raise ConfigError(f"profile {self.name!r}: fp16 export is only available for format='onnx'")

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> ExportProfile:
        """Read a profile file; unknown keys and wrong types are :class:`ConfigError`."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"export profile not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"export profile {path} is not valid TOML: {exc}") from None
        flat: dict[str, Any] = {}
        for section, values in data.items():
            if isinstance(values, dict):
                flat.update(values)
            else:
                flat[section] = values
        return cls.from_dict(flat, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "profile") -> ExportProfile:
        """Build from a flat mapping, checking names and types against the dataclass fields."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"{source}: unknown export profile key(s) {unknown}; known: {sorted(fields)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            default = getattr(cls, key, None) if key != "preferred_batch_sizes" else ()
            if key == "preferred_batch_sizes":
                if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
                    raise ConfigError(f"{source}: preferred_batch_sizes must be a list of integers")
                value = tuple(value)
            elif isinstance(default, bool) and not isinstance(value, bool):
                raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
            elif isinstance(default, int) and not isinstance(default, bool) and type(value) is not int:
                raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
            elif isinstance(default, str) and not isinstance(value, str):
                raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
            kwargs[key] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (stored in the model card)."""
        out = dataclasses.asdict(self)
        out["preferred_batch_sizes"] = list(self.preferred_batch_sizes)
        return out
