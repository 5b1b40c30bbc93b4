"""In-process inference on an exported model repository, without a Triton server.

:class:`OfflinePredictor` verifies the repository (:func:`gliodeploy.export.modelcard.verify_repository`),
then loads what the server serves for one ``gliodeploy_ensemble`` version: its ONNX graph
(``model.onnx``, the file the python-backend ``model.py`` runs) and its checksummed ``metadata.json``
(preprocessing, threshold, operating point). Scans go through the client's own reading, SUV and
preprocessing code (``read_suv_image`` and ``to_model_grid`` of :mod:`gliodeploy.client.api`) and
come back as the client's ``Prediction`` / ``ScanFailure``, so outputs, decisions and exit codes are
those of ``gliodeploy-client predict``.

:meth:`OfflinePredictor.predict_many` overlaps reading and preprocessing of the next scans (a thread
pool, at most ``prefetch`` scans ahead) with inference in the calling thread; ONNX Runtime, SimpleITK
and zlib release the GIL, so a folder runs close to the model-bound rate. Never imports torch.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gliodeploy import contract
from gliodeploy.client.api import (
    GliodeployClient,
    ModelInfo,
    Prediction,
    ScanFailure,
    parse_model_info,
    read_suv_image,
    to_model_grid,
)
from gliodeploy.client.errors import InvalidResponseError, ModelVersionError
from gliodeploy.client.provenance import provenance_block
from gliodeploy.client.validation import check_grid_array
from gliodeploy.errors import ConfigError, GliodeployError, ModelError

#: ``device`` choices: ``auto`` puts CUDA first when onnxruntime-gpu sees a GPU, else CPU.
DEVICES = ("auto", "cpu", "cuda")
_OUTPUTS = [contract.OUTPUT_PROBABILITY, contract.OUTPUT_FOLD_PROBABILITIES, contract.OUTPUT_LOGIT]


def select_providers(device: str, available: Sequence[str]) -> list[str]:
    """ONNX Runtime execution providers for ``device``, given the ones this onnxruntime build offers."""
    if device not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise ConfigError(
            "--device cuda: this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
        )
    if device != "cpu" and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def resolve_version(found: Sequence[int], requested: str | int | None, repo: Path) -> int:
    """The ensemble version to run: ``requested`` if the repository has it, else the latest (served) one."""
    if requested is None or str(requested).strip() == "":
        return max(found)
    text = str(requested).strip()
    if not text.isdigit() or int(text) not in found:
        raise ModelVersionError(
            f"{repo / contract.ENSEMBLE_MODEL} has no version {text!r} "
            f"(versions: {', '.join(map(str, found))})"
        )
    return int(text)


def model_info_from_metadata(
    metadata: dict[str, Any],
    version: int,
    versions: Sequence[int],
    checksum: dict[str, Any] | None = None,
    cpu_runtime: dict[str, Any] | None = None,
) -> ModelInfo:
    """:class:`ModelInfo` from a version's ``metadata.json``, through the client's own checks.

    The metadata is shaped into the KServe metadata / Triton config a server would publish for this
    version and parsed by :func:`gliodeploy.client.api.parse_model_info`, so a model the client would
    refuse is refused here too. ``checksum`` is the version's model checksum
    (:func:`gliodeploy.export.integrity.model_checksum`), published as a server publishes it;
    ``cpu_runtime`` the engine/precision that runs it (as ``gliodeploy serve`` publishes it).
    """
    params = {
        contract.PARAM_THRESHOLD: {"string_value": repr(float(metadata.get("threshold", "nan")))},
        contract.PARAM_PREPROCESSING: {"string_value": json.dumps(metadata.get("preprocessing"))},
    }
    if metadata.get("operating_point"):
        params[contract.PARAM_OPERATING_POINT] = {"string_value": json.dumps(metadata["operating_point"])}
    if checksum:
        params[contract.PARAM_MODEL_CHECKSUM] = {"string_value": json.dumps(checksum)}
    if cpu_runtime:
        params[contract.PARAM_CPU_RUNTIME] = {"string_value": json.dumps(cpu_runtime, sort_keys=True)}
    meta = {
        "name": contract.ENSEMBLE_MODEL,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime (in-process)",
        "inputs": metadata.get("inputs", []),
        "outputs": metadata.get("outputs", []),
    }
    import onnxruntime as ort

    server = {"name": "onnxruntime", "version": ort.__version__}
    return parse_model_info(meta, {"parameters": params}, server, requested_version=str(version))


def resolve_engine(
    version_dir: Path, engine: str, precision: str, threads: int, providers: Sequence[str]
) -> tuple[Any, Any]:
    """(engine, auto decision or None) for a version (:func:`gliodeploy.runtime.engines.resolve_version`)."""
    from gliodeploy.runtime.engines import resolve_version as resolve_engine_version

    return resolve_engine_version(version_dir, engine, precision, threads=threads, providers=providers)


@dataclass
class _Prepared:
    """One scan read and preprocessed, waiting for inference."""

    source: str
    array: np.ndarray
    timings: dict[str, float]
    t0: float
    scan: dict[str, Any] = field(default_factory=dict)
    suv: dict[str, Any] = field(default_factory=dict)


class OfflinePredictor:
    """Run one exported ``gliodeploy_ensemble`` version in-process (ONNX Runtime or OpenVINO).

    ``version`` None/"" = the latest version (the one the server serves); ``device`` is one of
    :data:`DEVICES`; ``threads`` = intra-op threads (0: the engine's default, one per physical core);
    ``engine``/``precision`` (:mod:`gliodeploy.runtime.engines`; None = the version's exported
    choice, ``auto`` = chosen by measurement on the version's reference cases). Raises
    :class:`~gliodeploy.errors.ModelError` for a repository that fails verification or a version
    that is not an ONNX export, :class:`~gliodeploy.errors.ConfigError` for a choice that cannot run.
    """

    def __init__(
        self,
        repository: str | Path,
        *,
        version: str | int | None = None,
        device: str = "auto",
        threads: int = 0,
        engine: str | None = None,
        precision: str | None = None,
    ) -> None:
        import onnxruntime as ort

        from gliodeploy.export.integrity import model_checksum
        from gliodeploy.export.modelcard import verify_repository
        from gliodeploy.runtime.engines import check_names

        if threads < 0:
            raise ConfigError(f"threads must be >= 0, got {threads}")
        providers = select_providers(device, ort.get_available_providers())
        self.repository = Path(repository)
        found = verify_repository(self.repository)[contract.ENSEMBLE_MODEL]
        self.version = resolve_version(found, version, self.repository)
        self.version_dir = self.repository / contract.ENSEMBLE_MODEL / str(self.version)
        meta_path = self.version_dir / "metadata.json"
        try:
            self.metadata: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read {meta_path}: {exc}") from None
        if self.metadata.get("format", "onnx") != "onnx":
            raise ModelError(
                f"{self.version_dir}: a {self.metadata.get('format')} export; gliodeploy predict runs ONNX "
                "graphs (export with --format onnx)"
            )
        exported = self.metadata.get("profile") or {}
        engine = engine or exported.get("cpu_engine", "onnxruntime")
        precision = precision or exported.get("cpu_precision", "fp32")
        check_names(engine, precision)
        if engine != "onnxruntime" and "CUDAExecutionProvider" in providers:
            if device == "cuda":
                raise ConfigError(f"--device cuda runs ONNX Runtime only, not engine {engine!r}")
            engine = "onnxruntime"  # device auto found a GPU: ONNX Runtime's CUDA provider, float32
            precision = "fp32"
        self.onnx_path = self.version_dir / "model.onnx"  # the file the served model.py runs
        self.engine, self.auto = resolve_engine(self.version_dir, engine, precision, threads, providers)
        self.providers: list[str] = list(self.engine.providers)
        cpu_runtime = {**self.engine.choice.to_dict(), **({"auto": self.auto.reason} if self.auto else {})}
        try:
            # The digest of the SHA256SUMS just verified: what a server on this repository publishes.
            checksum = model_checksum(self.version_dir, self.version)
            self.info = model_info_from_metadata(self.metadata, self.version, found, checksum, cpu_runtime)
        except InvalidResponseError as exc:
            raise ModelError(f"{meta_path}: {exc}") from None
        shape = getattr(self.engine, "input_shape", [None] * 5)[2:]
        dims = [d if isinstance(d, int) else None for d in shape]
        if any(d is not None and d != g for d, g in zip(dims, self.info.grid_shape, strict=False)):
            raise ModelError(
                f"{self.onnx_path}: input grid {dims} differs from the metadata's "
                f"{list(self.info.grid_shape)}"
            )

    def describe(self) -> str:
        """``gliodeploy_ensemble v2 from REPO, in-process with onnxruntime 1.x fp32``"""
        return (
            f"{self.info.name} v{self.version} from {self.repository}, in-process with "
            f"{self.engine.describe()}"
        )

    def runtime(self) -> dict[str, Any]:
        """JSON-ready facts about the run: repository, version, ONNX file, engine, providers."""
        return {
            "mode": "offline",
            "repository": str(self.repository),
            "version": self.version,
            "onnx": str(self.engine.path),
            "providers": self.providers,
            "engine": self.engine.facts(),
            "auto": self.auto.to_dict() if self.auto else None,
            "onnxruntime": self.info.server.get("version"),
        }

    # -- inference ---------------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph on ``[B, 1, X, Y, Z]`` model-grid SUV; returns the three named outputs."""
        return self.engine.run(batch)

    def _predict_prepared(self, item: _Prepared) -> Prediction:
        t = time.perf_counter()
        out = self.infer(item.array[None, None])
        item.timings["request"] = time.perf_counter() - t  # in-process inference (no request here)
        # The client's own conversion: same probability checks, decision rule and result type.
        pred = GliodeployClient._prediction(
            out, self.info, item.source, item.timings, item.t0, self.info.name, self.info.version
        )
        trail = provenance_block(self.info, self.info.name, server_preprocess=False)
        return replace(pred, scan=item.scan, suv=item.suv, provenance=trail)

    def predict_volume(self, suv_grid_xyz: np.ndarray, *, source: str = "<array>") -> Prediction:
        """Predict from a brain-masked SUV volume already on the model grid, ``[x, y, z]``."""
        t0 = time.perf_counter()
        array = check_grid_array(suv_grid_xyz, self.info.grid_shape, source)
        timings = {"read": 0.0, "suv": 0.0, "preprocess": 0.0}
        return self._predict_prepared(_Prepared(source, array, timings, t0))

    def prepare(self, path: str | Path, **load_kwargs: Any) -> _Prepared:
        """Read, convert to SUV and preprocess one scan exactly as ``gliodeploy-client predict``."""
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        scan: dict[str, Any] = {}
        suv: dict[str, Any] = {}
        image = read_suv_image(path, timings, scan_facts=scan, suv_facts=suv, **load_kwargs)
        array = to_model_grid(image, self.info, str(path), timings)
        return _Prepared(str(path), array, timings, t0, scan, suv)

    def predict_file(self, path: str | Path, **load_kwargs: Any) -> Prediction:
        """Read, preprocess and predict one NIfTI file or DICOM series (``load_kwargs``: SUV fields)."""
        return self._predict_prepared(self.prepare(path, **load_kwargs))

    def predict_many(
        self,
        paths: Sequence[str | Path],
        *,
        workers: int = 2,
        prefetch: int | None = None,
        progress: Callable[[Prediction | ScanFailure], None] | None = None,
        **load_kwargs: Any,
    ) -> list[Prediction | ScanFailure]:
        """Predict many scans, results in input order; a failing scan becomes a :class:`ScanFailure`.

        ``workers`` threads read and preprocess up to ``prefetch`` (default ``2 * workers``) scans
        ahead while the calling thread runs the model: memory stays bounded and the model never
        waits when reading is faster than inference.
        """
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        window = max(1, prefetch if prefetch is not None else 2 * workers)
        results: list[Prediction | ScanFailure] = []
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gliodeploy-read") as pool:
            pending: deque[tuple[str | Path, Future[_Prepared]]] = deque()
            queue = iter(paths)

            def refill() -> None:
                while len(pending) < window:
                    path = next(queue, None)
                    if path is None:
                        return
                    pending.append((path, pool.submit(self.prepare, path, **load_kwargs)))

            try:
                refill()
                while pending:
                    path, future = pending.popleft()
                    refill()  # keep the readers busy while this scan runs through the model
                    results.append(self._guarded(path, future))
                    if progress is not None:
                        progress(results[-1])
            except BaseException:  # Ctrl-C: do not start the queued scans before leaving
                for _, future in pending:
                    future.cancel()
                raise
        return results

    def _guarded(self, path: str | Path, future: Future[_Prepared]) -> Prediction | ScanFailure:
        try:
            return self._predict_prepared(future.result())
        except GliodeployError as exc:
            return ScanFailure(str(path), str(exc), type(exc).__name__, exc.exit_code)
        except Exception as exc:  # e.g. a reader bug on a corrupt file: report it, keep going
            return ScanFailure(str(path), f"{type(exc).__name__}: {exc}", type(exc).__name__, 1)
