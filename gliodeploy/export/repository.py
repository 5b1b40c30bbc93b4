"""Triton model repository: configuration protobufs, versioned writes, config validation.

Layout (see docs/ARCHITECTURE.md)::

    gliodeploy_ensemble/  config.pbtxt (GPU), configs/{cpu,local}.pbtxt, <N>/model.onnx model.py ...
    gliodeploy_geometry/  config.pbtxt, configs/{cpu,local}.pbtxt, <N>/model.py preprocessing.json
    gliodeploy_native/    config.pbtxt, configs/{cpu,local}.pbtxt, <N>/ (a Triton ensemble: empty)

Configurations are built as ``tritonclient.grpc.model_config_pb2.ModelConfig`` and printed with
protobuf's text_format, so they are syntactically valid by construction; :func:`validate_configs`
parses every file back. One export adds version ``N`` to all three models at once (latest-version
policy keeps them paired) and rewrites every configuration, all published together by
:mod:`gliodeploy.export.publish`; older versions are never modified.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from gliodeploy import contract
from gliodeploy.errors import ModelError
from gliodeploy.export.profiles import TARGETS, ExportProfile
from gliodeploy.utils.atomic import atomic_write

MODELS = (contract.ENSEMBLE_MODEL, contract.GEOMETRY_MODEL, contract.NATIVE_PIPELINE_MODEL)
# Configuration targets: TARGETS (from profiles, re-exported here). ``gpu`` is the default
# ``config.pbtxt``; others live in ``configs/<name>.pbtxt``, selected with
# ``tritonserver --model-config-name=<name>``.
#: A version folder name: a positive integer without leading zeros (Triton's own rule).
VERSION_RE = re.compile(r"^[1-9][0-9]*$")


@dataclass(frozen=True)
class EnsembleSpec:
    """What the configurations need to know about the exported ensemble."""

    grid_shape: tuple[int, int, int]
    num_folds: int
    format: str  # "onnx" | "torchscript"
    #: PreprocessConfig.to_dict() as JSON and the decision threshold: published as config parameters
    #: so that any client (gliodeploy-client reads them) preprocesses exactly as in training.
    preprocessing_json: str = "{}"
    threshold: float = 0.5
    operating_point_json: str = "{}"
    #: :data:`gliodeploy.contract.PARAM_MODEL_CHECKSUM` JSON, known once the version folder is written.
    model_checksum_json: str = ""

    @property
    def model_filename(self) -> str:
        """File name of the exported graph inside a version folder."""
        return "model.onnx" if self.format == "onnx" else "model.pt"


def _tensor(cls: type, name: str, dtype: int, dims: list[int]):  # noqa: ANN202 - protobuf message
    return cls(name=name, data_type=dtype, dims=dims)


def _latest_policy() -> mc.ModelVersionPolicy:
    return mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=1))


def ensemble_config(spec: EnsembleSpec, profile: ExportProfile, target: str) -> mc.ModelConfig:
    """Configuration of ``gliodeploy_ensemble`` for ``target`` (``gpu``, ``cpu`` or ``local``).

    Batching is the profile's for that target. The gpu and cpu configurations carry ``model_warmup``
    (when the profile asks for it) so Triton reports the model ready only after the first inferences
    ran: on a GPU that is when ONNX Runtime's TensorRT provider has built (or loaded) its engine.
    """
    if target not in TARGETS:
        raise ModelError(f"unknown configuration target {target!r}; expected one of {TARGETS}")
    batching = profile.batching(target)
    cfg = mc.ModelConfig(
        name=contract.ENSEMBLE_MODEL,
        max_batch_size=batching.max_batch_size,
        version_policy=_latest_policy(),
        input=[_tensor(mc.ModelInput, contract.INPUT_SUV, mc.TYPE_FP32, [1, *spec.grid_shape])],
        # Order = the exported graph's output order (TorchScript binds outputs by position).
        output=[
            _tensor(mc.ModelOutput, contract.OUTPUT_PROBABILITY, mc.TYPE_FP32, [1]),
            _tensor(mc.ModelOutput, contract.OUTPUT_FOLD_PROBABILITIES, mc.TYPE_FP32, [spec.num_folds]),
            _tensor(mc.ModelOutput, contract.OUTPUT_LOGIT, mc.TYPE_FP32, [1]),
        ],
        dynamic_batching=mc.ModelDynamicBatching(
            preferred_batch_size=list(batching.preferred_batch_sizes),
            max_queue_delay_microseconds=batching.max_queue_delay_microseconds,
        ),
    )
    cfg.parameters[contract.PARAM_PREPROCESSING].string_value = spec.preprocessing_json
    cfg.parameters[contract.PARAM_THRESHOLD].string_value = repr(float(spec.threshold))
    cfg.parameters[contract.PARAM_OPERATING_POINT].string_value = spec.operating_point_json
    if spec.model_checksum_json:
        cfg.parameters[contract.PARAM_MODEL_CHECKSUM].string_value = spec.model_checksum_json
    if target == "local":
        if spec.format != "onnx":
            raise ModelError(
                "the local (python backend) configuration runs ONNX Runtime: export with format onnx"
            )
        cfg.backend = "python"
        cfg.instance_group.append(
            mc.ModelInstanceGroup(count=profile.cpu_instances, kind=mc.ModelInstanceGroup.KIND_CPU)
        )
        cfg.parameters["onnx_file"].string_value = spec.model_filename
        cfg.parameters["intra_op_thread_count"].string_value = str(profile.intra_op_threads)
        runtime = {"engine": profile.cpu_engine, "precision": profile.cpu_precision}
        cfg.parameters[contract.PARAM_CPU_RUNTIME].string_value = json.dumps(runtime, sort_keys=True)
        return cfg
    cfg.backend = "onnxruntime" if spec.format == "onnx" else "pytorch"
    cfg.default_model_filename = spec.model_filename
    if profile.warmup:
        cfg.model_warmup.extend(warmup_entries(spec, batching.max_batch_size, batching.preferred_batch_sizes))
    if target == "cpu":
        cfg.instance_group.append(
            mc.ModelInstanceGroup(count=profile.cpu_instances, kind=mc.ModelInstanceGroup.KIND_CPU)
        )
        if spec.format == "onnx" and profile.intra_op_threads:
            cfg.parameters["intra_op_thread_count"].string_value = str(profile.intra_op_threads)
        return cfg
    cfg.instance_group.append(
        mc.ModelInstanceGroup(count=profile.gpu_instances, kind=mc.ModelInstanceGroup.KIND_GPU)
    )
    if spec.format == "onnx" and profile.tensorrt:
        cfg.optimization.execution_accelerators.gpu_execution_accelerator.append(
            tensorrt_accelerator(spec, profile)
        )
    return cfg


def warmup_batch_sizes(max_batch_size: int, preferred: tuple[int, ...]) -> list[int]:
    """Batch sizes warmed up: 1 (a lone request) and every preferred size, within ``max_batch_size``."""
    return sorted({1, *(b for b in preferred if b <= max_batch_size)})


def warmup_entries(
    spec: EnsembleSpec, max_batch_size: int, preferred: tuple[int, ...]
) -> list[mc.ModelWarmup]:
    """``model_warmup`` of the ensemble: one random-data request per :func:`warmup_batch_sizes` size.

    Random rather than zero data: an all-zero scan makes the in-graph normalisation divide by zero,
    and a warmup should take the same path as a real scan.
    """
    out = []
    for size in warmup_batch_sizes(max_batch_size, preferred):
        entry = mc.ModelWarmup(name=f"{contract.INPUT_SUV}_batch_{size}", batch_size=size, count=1)
        entry.inputs[contract.INPUT_SUV].CopyFrom(
            mc.ModelWarmup.Input(data_type=mc.TYPE_FP32, dims=[1, *spec.grid_shape], random_data=True)
        )
        out.append(entry)
    return out


def tensorrt_accelerator(
    spec: EnsembleSpec, profile: ExportProfile
) -> mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator:
    """The TensorRT execution accelerator of the gpu configuration (onnxruntime backend parameters).

    One explicit optimization profile covers batch 1..max_batch_size (optimised for the largest
    preferred size), so ONNX Runtime builds a single engine at warmup instead of rebuilding whenever a
    larger batch arrives. Engines and the timing cache go to ``profile.tensorrt_cache_path``; ONNX
    Runtime names engines by a hash of the graph, so versions sharing the folder do not collide.
    """
    batching = profile.batching("gpu")
    opt = max(batching.preferred_batch_sizes, default=batching.max_batch_size)
    item = "x".join(str(d) for d in (1, *spec.grid_shape))  # per-scan dims: channel + grid

    def shape(batch: int) -> str:
        return f"{contract.INPUT_SUV}:{batch}x{item}"

    trt = mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator(name="tensorrt")
    params = {
        "precision_mode": profile.tensorrt_precision,
        "max_workspace_size_bytes": str(profile.tensorrt_workspace_bytes),
        "trt_profile_min_shapes": shape(1),
        "trt_profile_opt_shapes": shape(opt),
        "trt_profile_max_shapes": shape(batching.max_batch_size),
    }
    if profile.tensorrt_cache_path:
        params |= {
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": profile.tensorrt_cache_path,
            "trt_timing_cache_enable": "1",
            "trt_timing_cache_path": profile.tensorrt_cache_path,
        }
    for key, value in params.items():
        trt.parameters[key] = value
    return trt


def geometry_config(spec: EnsembleSpec) -> mc.ModelConfig:
    """Configuration of ``gliodeploy_geometry`` (python backend on CPU for every target)."""
    cfg = mc.ModelConfig(
        name=contract.GEOMETRY_MODEL,
        backend="python",
        max_batch_size=0,  # one native volume per request: native shapes differ between scans
        version_policy=_latest_policy(),
        input=[
            _tensor(mc.ModelInput, contract.INPUT_NATIVE_VOLUME, mc.TYPE_FP32, [-1, -1, -1]),
            _tensor(mc.ModelInput, contract.INPUT_SPACING, mc.TYPE_FP64, [3]),
            _tensor(mc.ModelInput, contract.INPUT_ORIGIN, mc.TYPE_FP64, [3]),
            _tensor(mc.ModelInput, contract.INPUT_DIRECTION, mc.TYPE_FP64, [9]),
        ],
        output=[_tensor(mc.ModelOutput, contract.INPUT_SUV, mc.TYPE_FP32, [1, 1, *spec.grid_shape])],
    )
    cfg.instance_group.append(mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_CPU))
    return cfg


def native_config(spec: EnsembleSpec) -> mc.ModelConfig:
    """Configuration of ``gliodeploy_native``: Triton ensemble geometry -> fold ensemble."""
    step = mc.ModelEnsembling.Step
    cfg = mc.ModelConfig(
        name=contract.NATIVE_PIPELINE_MODEL,
        platform="ensemble",
        max_batch_size=0,
        version_policy=_latest_policy(),
        input=[
            _tensor(mc.ModelInput, contract.INPUT_NATIVE_VOLUME, mc.TYPE_FP32, [-1, -1, -1]),
            _tensor(mc.ModelInput, contract.INPUT_SPACING, mc.TYPE_FP64, [3]),
            _tensor(mc.ModelInput, contract.INPUT_ORIGIN, mc.TYPE_FP64, [3]),
            _tensor(mc.ModelInput, contract.INPUT_DIRECTION, mc.TYPE_FP64, [9]),
        ],
        output=[
            _tensor(mc.ModelOutput, contract.OUTPUT_PROBABILITY, mc.TYPE_FP32, [1, 1]),
            _tensor(mc.ModelOutput, contract.OUTPUT_FOLD_PROBABILITIES, mc.TYPE_FP32, [1, spec.num_folds]),
            _tensor(mc.ModelOutput, contract.OUTPUT_LOGIT, mc.TYPE_FP32, [1, 1]),
        ],
    )
    names = (
        contract.INPUT_NATIVE_VOLUME,
        contract.INPUT_SPACING,
        contract.INPUT_ORIGIN,
        contract.INPUT_DIRECTION,
    )
    outputs = (contract.OUTPUT_PROBABILITY, contract.OUTPUT_FOLD_PROBABILITIES, contract.OUTPUT_LOGIT)
    cfg.ensemble_scheduling.step.extend(
        [
            step(
                model_name=contract.GEOMETRY_MODEL,
                model_version=-1,
                input_map={n: n for n in names},
                output_map={contract.INPUT_SUV: "grid_suv"},
            ),
            step(
                model_name=contract.ENSEMBLE_MODEL,
                model_version=-1,
                input_map={contract.INPUT_SUV: "grid_suv"},
                output_map={n: n for n in outputs},
            ),
        ]
    )
    return cfg


def config_text(cfg: mc.ModelConfig) -> str:
    """``config.pbtxt`` text of a configuration."""
    return text_format.MessageToString(cfg)


def config_paths(model_dir: Path) -> dict[str, Path]:
    """Target name -> configuration file of one model folder."""
    return {
        "gpu": model_dir / "config.pbtxt",
        **{t: model_dir / "configs" / f"{t}.pbtxt" for t in TARGETS[1:]},
    }


def write_configs(repo: Path, spec: EnsembleSpec, profile: ExportProfile) -> list[Path]:
    """(Re)write every model's configurations for the latest export; returns the files written."""
    builders: dict[str, Callable[[str], mc.ModelConfig]] = {
        contract.ENSEMBLE_MODEL: lambda t: ensemble_config(spec, profile, t),
        contract.GEOMETRY_MODEL: lambda t: geometry_config(spec),
        contract.NATIVE_PIPELINE_MODEL: lambda t: native_config(spec),
    }
    written = []
    for model, build in builders.items():
        for target, path in config_paths(repo / model).items():
            if target != "local" or spec.format == "onnx" or model != contract.ENSEMBLE_MODEL:
                path.parent.mkdir(parents=True, exist_ok=True)
                written.append(atomic_write(path, config_text(build(target))))
            else:  # TorchScript has no python-backend runner: no stale local config either
                path.unlink(missing_ok=True)
    return written


def parse_config(path: str | os.PathLike[str]) -> mc.ModelConfig:
    """Parse one ``.pbtxt`` into a ``ModelConfig``; :class:`ModelError` names the file and the problem."""
    path = Path(path)
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())
    except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
        raise ModelError(f"invalid Triton configuration {path}: {exc}") from None


def validate_configs(repo: str | os.PathLike[str]) -> dict[Path, mc.ModelConfig]:
    """Parse every ``config.pbtxt`` and ``configs/*.pbtxt`` of the repository and check basic consistency.

    Checks: each file parses, its ``name`` is its folder's name, the three gliodeploy models are
    present, and ensemble steps name models of this repository.
    """
    repo = Path(repo)
    if not repo.is_dir():
        raise ModelError(f"model repository not found: {repo}")
    found: dict[Path, mc.ModelConfig] = {}
    for model in MODELS:
        if not (repo / model / "config.pbtxt").is_file():
            raise ModelError(f"{repo / model / 'config.pbtxt'} is missing")
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in [model_dir / "config.pbtxt", *sorted((model_dir / "configs").glob("*.pbtxt"))]:
            if not path.is_file():
                continue
            cfg = parse_config(path)
            if cfg.name and cfg.name != model_dir.name:
                raise ModelError(f"{path}: name {cfg.name!r} differs from its folder {model_dir.name!r}")
            for step in cfg.ensemble_scheduling.step:
                if not (repo / step.model_name).is_dir():
                    raise ModelError(
                        f"{path}: ensemble step names model {step.model_name!r}, absent from {repo}"
                    )
            found[path] = cfg
    return found


def versions(model_dir: Path) -> list[int]:
    """Existing numeric version folders of one model, sorted."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and VERSION_RE.match(p.name))
