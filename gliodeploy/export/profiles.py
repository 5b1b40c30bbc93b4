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
#: Configuration targets (see :mod:`gliodeploy.export.repository`); ``gpu`` batching is the profile's own.
TARGETS = ("gpu", "cpu", "local")
#: Largest batch of the cpu/local configurations unless the profile says otherwise: one full-size scan
#: (128x128x82) takes ~344 MB of first-layer activations in the study's CNN3D, so a GPU-sized batch
#: of 16 would need ~5.5 GB of host memory per instance. Local stays >1 so dynamic batching still
#: groups concurrent requests of the bundled server.
DEFAULT_TARGET_MAX_BATCH = {"cpu": 2, "local": 2}
#: Where ONNX Runtime's TensorRT provider keeps built engines and its timing cache (writable in the
#: container; mount a volume there so engines survive restarts, see docker/compose.yaml).
DEFAULT_TRT_CACHE_PATH = "/tmp/gliodeploy-trt-cache"
_BATCHING_KEYS = ("max_batch_size", "preferred_batch_sizes", "max_queue_delay_microseconds")


@dataclass(frozen=True)
class Batching:
    """Triton batching of one configuration target (``max_batch_size`` and ``dynamic_batching``)."""

    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_microseconds: int

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-friendly form."""
        return {**dataclasses.asdict(self), "preferred_batch_sizes": list(self.preferred_batch_sizes)}


@dataclass(frozen=True)
class ExportProfile:
    """How the ensemble is exported and scheduled by Triton.

    One profile fills all three configurations of ``gliodeploy_ensemble`` (``config.pbtxt`` for
    GPU, ``configs/cpu.pbtxt``, ``configs/local.pbtxt``); the profile name only documents intent.
    The top-level batching fields are the GPU target's; ``cpu_batching``/``local_batching`` (TOML
    ``[batching.cpu]``/``[batching.local]``) override them per target, and default to the GPU values
    capped at :data:`DEFAULT_TARGET_MAX_BATCH` (see :meth:`batching`).
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
    #: Engine and timing cache folder of the TensorRT provider ("" = no caches: rebuild at every load).
    tensorrt_cache_path: str = DEFAULT_TRT_CACHE_PATH
    #: ``model_warmup`` over batch 1 and the preferred sizes in the gpu and cpu configurations, so the
    #: server reports READY only once engines are built and memory is allocated.
    warmup: bool = True
    cpu_batching: Batching | None = None
    local_batching: Batching | None = None
    #: Engine and precision of the bundled server's python-backend model and of ``gliodeploy predict``
    #: (``onnxruntime``/``openvino``/``auto``; ``fp32``/``bf16``/``int8``/``auto``): see
    #: :mod:`gliodeploy.runtime.engines`. ``int8`` or ``auto`` also writes ``model.int8.onnx``,
    #: calibrated on ``int8_calibration_scans`` training scans of the run.
    cpu_engine: str = "onnxruntime"
    cpu_precision: str = "fp32"
    int8_calibration_scans: int = 16

    def batching(self, target: str) -> Batching:
        """Batching of configuration ``target`` (``gpu``, ``cpu`` or ``local``)."""
        gpu = Batching(
            self.max_batch_size, tuple(self.preferred_batch_sizes), self.max_queue_delay_microseconds
        )
        if target == "gpu":
            return gpu
        if target not in TARGETS:
            raise ConfigError(f"unknown configuration target {target!r}; expected one of {TARGETS}")
        override = self.cpu_batching if target == "cpu" else self.local_batching
        return override if override is not None else _capped(gpu, DEFAULT_TARGET_MAX_BATCH[target])

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"profile {self.name!r}: format must be one of {FORMATS}, got {self.format!r}")
        if self.tensorrt_precision not in TRT_PRECISIONS:
            raise ConfigError(
                f"profile {self.name!r}: tensorrt_precision must be one of {TRT_PRECISIONS}, "
                f"got {self.tensorrt_precision!r}"
            )
        for target in TARGETS:
            _check_batching(
                self.batching(target),
                f"profile {self.name!r}" + ("" if target == "gpu" else f" [batching.{target}]"),
            )
        if self.tensorrt_cache_path and not self.tensorrt_cache_path.startswith("/"):
            raise ConfigError(
                f"profile {self.name!r}: tensorrt_cache_path must be an absolute path inside the server "
                f'(or "" for no cache), got {self.tensorrt_cache_path!r}'
            )
        for key in ("max_queue_delay_microseconds", "intra_op_threads"):
            if getattr(self, key) < 0:
                raise ConfigError(f"profile {self.name!r}: {key} must be >= 0")
        for key in ("gpu_instances", "cpu_instances"):
            if getattr(self, key) < 1:
                raise ConfigError(f"profile {self.name!r}: {key} must be >= 1")
        _check_cpu_runtime(self)
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
            if not isinstance(values, dict):
                flat[section] = values
                continue
            for key, value in values.items():
                if section == "batching" and key == "gpu" and isinstance(value, dict):
                    flat.update(value)  # [batching.gpu] is the top-level batching, spelled out
                elif section == "batching" and key in TARGETS and isinstance(value, dict):
                    flat[f"{key}_batching"] = value
                else:
                    flat[key] = value
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
            if key in ("cpu_batching", "local_batching"):
                continue  # resolved below, once the GPU batching they default from is known
            if key == "preferred_batch_sizes":
                value = _int_list(value, source, key)
            elif isinstance(default, bool) and not isinstance(value, bool):
                raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
            elif isinstance(default, int) and not isinstance(default, bool) and type(value) is not int:
                raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
            elif isinstance(default, str) and not isinstance(value, str):
                raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
            kwargs[key] = value
        gpu = Batching(*(kwargs.get(k, getattr(cls, k)) for k in _BATCHING_KEYS))
        for target in ("cpu", "local"):
            table = data.get(f"{target}_batching")
            if table is None:
                continue
            where = f"{source}: [batching.{target}]"
            if isinstance(table, Batching):
                kwargs[f"{target}_batching"] = table
                continue
            if not isinstance(table, dict):
                raise ConfigError(f"{where} must be a table of {list(_BATCHING_KEYS)}")
            unknown = sorted(set(table) - set(_BATCHING_KEYS))
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {list(_BATCHING_KEYS)}")
            for key in ("max_batch_size", "max_queue_delay_microseconds"):
                if key in table and type(table[key]) is not int:
                    raise ConfigError(f"{where}: {key} must be an integer, got {table[key]!r}")
            # Keys left out fall back to the GPU values, capped like the target's default.
            cap = table.get("max_batch_size", min(gpu.max_batch_size, DEFAULT_TARGET_MAX_BATCH[target]))
            base = _capped(gpu, cap) if cap >= 1 else gpu
            kwargs[f"{target}_batching"] = Batching(
                max_batch_size=cap,
                preferred_batch_sizes=(
                    _int_list(table["preferred_batch_sizes"], where, "preferred_batch_sizes")
                    if "preferred_batch_sizes" in table
                    else base.preferred_batch_sizes
                ),
                max_queue_delay_microseconds=table.get(
                    "max_queue_delay_microseconds", gpu.max_queue_delay_microseconds
                ),
            )
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (stored in the model card); every target's batching resolved."""
        out = dataclasses.asdict(self)
        out["preferred_batch_sizes"] = list(self.preferred_batch_sizes)
        for target in ("cpu", "local"):
            out[f"{target}_batching"] = self.batching(target).to_dict()
        return out


def _check_cpu_runtime(profile: ExportProfile) -> None:
    from gliodeploy.runtime.engines import check_names

    try:
        check_names(profile.cpu_engine, profile.cpu_precision)
    except ConfigError as exc:
        raise ConfigError(f"profile {profile.name!r}: cpu_engine/cpu_precision: {exc}") from None
    if profile.cpu_engine == "onnxruntime" and profile.cpu_precision == "bf16":
        raise ConfigError(
            f'profile {profile.name!r}: ONNX Runtime has no bf16 CPU kernels; use cpu_engine = "openvino"'
        )
    if profile.int8_calibration_scans < 1:
        raise ConfigError(f"profile {profile.name!r}: int8_calibration_scans must be >= 1")
    if profile.cpu_engine != "onnxruntime" and profile.format != "onnx":
        raise ConfigError(f"profile {profile.name!r}: cpu_engine {profile.cpu_engine!r} needs format onnx")


def _int_list(value: Any, source: str, key: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise ConfigError(f"{source}: {key} must be a list of integers")
    return tuple(value)


def _capped(gpu: Batching, cap: int) -> Batching:
    """``gpu`` batching limited to ``cap``; preferred sizes above it dropped (``cap`` when none remain)."""
    cap = min(gpu.max_batch_size, cap)
    preferred = tuple(b for b in gpu.preferred_batch_sizes if b <= cap) or ((cap,) if cap > 1 else ())
    return Batching(cap, preferred, gpu.max_queue_delay_microseconds)


def _check_batching(b: Batching, where: str) -> None:
    if b.max_batch_size < 1:
        raise ConfigError(f"{where}: max_batch_size must be >= 1, got {b.max_batch_size}")
    bad = [x for x in b.preferred_batch_sizes if not 1 <= x <= b.max_batch_size]
    if bad:
        raise ConfigError(
            f"{where}: preferred_batch_sizes {bad} outside 1..max_batch_size={b.max_batch_size}"
        )
    if b.max_queue_delay_microseconds < 0:
        raise ConfigError(f"{where}: max_queue_delay_microseconds must be >= 0")
