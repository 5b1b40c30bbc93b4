"""The Python API of the light client: ``GliodeployClient`` talks to a gliodeploy Triton server.

    client = GliodeployClient("localhost:8000")
    pred = client.predict_file("scan.nii.gz", weight_kg=70, injected_dose_bq=185e6, injection_time=...)
    print(pred.probability, pred.label_name)

The model's preprocessing config and decision threshold are read from its Triton config
(``parameters { key: "gliodeploy_preprocessing" ... }`` and ``"gliodeploy_threshold"``), so the
client always preprocesses exactly as the model was trained. Never imports torch.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gliodeploy import contract
from gliodeploy.client.errors import InvalidResponseError
from gliodeploy.client.provenance import input_facts, provenance_block, suv_block
from gliodeploy.client.retry import call_with_retries
from gliodeploy.client.transport import COMPRESSIONS, Endpoint, Transport, parse_url
from gliodeploy.client.validation import check_grid_array, check_native_image
from gliodeploy.errors import ConfigError, GliodeployError

log = logging.getLogger(__name__)

_OUTPUTS = [contract.OUTPUT_PROBABILITY, contract.OUTPUT_FOLD_PROBABILITIES, contract.OUTPUT_LOGIT]
_NP_DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}


@dataclass(frozen=True)
class ModelInfo:
    """What the server says about the model: enough to preprocess, send and interpret."""

    name: str
    version: str  # the version answering (requested, or the latest ready one)
    versions: list[str]
    platform: str
    input_datatype: str  # of the "suv" input: FP32 (or FP16 for a half-precision export)
    grid_shape: tuple[int, int, int]  # [x, y, z] of the model grid
    folds: int | None  # None when the fold_probabilities output has a dynamic size
    threshold: float
    preprocessing: dict[str, Any]
    server: dict[str, Any] = field(default_factory=dict)
    #: How the threshold was chosen and the sensitivity/specificity to expect at it (out-of-fold,
    #: with CIs); None for models exported before operating points were published.
    operating_point: dict[str, Any] | None = None
    #: ``gliodeploy_model_checksum``: ``{"version", "sha256sums_sha256", "gliodeploy"}`` of the version
    #: the configuration was exported with; None for models exported before it was published.
    checksum: dict[str, Any] | None = None
    #: ``gliodeploy_cpu_runtime``: ``{"engine", "precision"}`` running the python-backend model (with
    #: ``"auto"``: why, when chosen by measurement); None for configurations that do not publish it.
    cpu_runtime: dict[str, Any] | None = None

    def runtime_text(self) -> str:
        """``openvino/bf16 (auto: ...)``, or ``not published`` (native backends, older exports)."""
        rt = self.cpu_runtime
        if not rt:
            return "not published by this configuration"
        text = f"{rt.get('engine', '?')}/{rt.get('precision', '?')}"
        return f"{text} ({rt['auto']})" if rt.get("auto") else text

    def operating_point_text(self) -> str:
        """The operating point in one line (or the bare threshold for older exports)."""
        if self.operating_point:
            return contract.describe_operating_point(self.operating_point)
        return f"threshold {self.threshold:.4g} (origin not published by this model)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["grid_shape"] = list(self.grid_shape)
        return d


@dataclass(frozen=True)
class Prediction:
    """The ensemble's answer for one scan."""

    source: str
    probability: float  # P(recurrence), mean of the folds' probabilities
    label: int  # 1 recurrence, 0 treatment-related change (probability >= threshold)
    threshold: float
    fold_probs: list[float]
    fold_spread: float  # population std of the fold probabilities
    fold_min: float
    fold_max: float
    model_name: str
    model_version: str
    timings: dict[str, float]  # seconds: read, suv, preprocess, request, total
    #: what was read: ``format``, ``path``, ``sha256`` of the input bytes (``sha256_method``), ``bytes``,
    #: ``sidecar``/``sidecar_sha256``, ``weight_table``/``weight_table_sha256``; for DICOM ``n_files``, the
    #: ``series_uid`` and, when its folder held several series, ``series_choice`` (why that one)
    scan: dict[str, Any] = field(default_factory=dict)
    #: SUV inputs used: ``units`` of the volume sent and ``facts`` (weight, dose, injection and reference
    #: times, half-life, decay and SUV factors: each ``{value, source, detail}``)
    suv: dict[str, Any] = field(default_factory=dict)
    #: ``gliodeploy_version``, ``preprocessed_by``, ``model`` (name, version, checksum) and the
    #: ``operating_point`` that made the decision (:mod:`gliodeploy.client.provenance`)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def label_name(self) -> str:
        """``"recurrence"`` or ``"treatment-related change"``."""
        return contract.LABEL_NAMES[self.label]

    @property
    def ok(self) -> bool:
        """Always True (see :class:`ScanFailure`)."""
        return True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (includes ``label_name`` and ``ok``)."""
        return {**asdict(self), "label_name": self.label_name, "ok": True}


@dataclass(frozen=True)
class ScanFailure:
    """A scan of a batch that could not be predicted; the others still were."""

    source: str
    error: str
    error_type: str
    exit_code: int

    @property
    def ok(self) -> bool:
        """Always False."""
        return False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {**asdict(self), "ok": False}


class GliodeployClient:
    """A client for the ``gliodeploy_ensemble`` (and ``gliodeploy_native``) Triton models.

    Thread-safe: each thread gets its own tritonclient connection (tritonclient's HTTP client is
    not thread-safe). ``url`` is ``host[:port]`` or ``http(s)://host[:port]``; the default port
    is 8000 for HTTP and 8001 for gRPC. ``retries`` applies to transient failures only (server
    restarting, HTTP 502/503/504, gRPC UNAVAILABLE, connection reset), with exponential backoff.
    ``compression`` (``none``, ``gzip``, ``deflate``) compresses inference requests (HTTP
    Content-Encoding / gRPC message compression): worth it on slow links, not on loopback.
    """

    def __init__(
        self,
        url: str = "localhost:8000",
        protocol: str = "http",
        model: str = contract.ENSEMBLE_MODEL,
        model_version: str = "",
        timeout: float = 60.0,
        retries: int = 3,
        ssl: bool = False,
        ca_file: str | None = None,
        headers: Mapping[str, str] | None = None,
        fp16: bool = False,
        native_model: str = contract.NATIVE_PIPELINE_MODEL,
        compression: str = "none",
    ) -> None:
        host, scheme_ssl = parse_url(url, protocol)
        if compression not in COMPRESSIONS:
            raise ConfigError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 s, got {timeout}")
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
        if ca_file is not None and not Path(ca_file).is_file():
            raise ConfigError(f"--ca-file {ca_file}: no such file")
        self.endpoint = Endpoint(
            url=host,
            protocol=protocol,
            timeout=float(timeout),
            ssl=ssl or scheme_ssl or ca_file is not None,
            ca_file=ca_file,
            headers=dict(headers or {}),
            compression=None if compression == "none" else compression,
        )
        self.model = model
        self.model_version = str(model_version or "")
        self.native_model = native_model
        self.retries = retries
        self.fp16 = fp16
        self._local = threading.local()
        self._transports: list[Transport] = []
        self._lock = threading.Lock()
        self._info: ModelInfo | None = None

    # -- plumbing ------------------------------------------------------------------------------
    def _transport(self) -> Transport:
        t = getattr(self._local, "transport", None)
        if t is None:
            t = Transport(self.endpoint)
            self._local.transport = t
            with self._lock:
                self._transports.append(t)
        return t

    def _retrying(self, fn: Callable[[Transport], Any]) -> Any:
        return call_with_retries(lambda: fn(self._transport()), retries=self.retries)

    def close(self) -> None:
        """Close every connection opened by this client."""
        with self._lock:
            for t in self._transports:
                t.close()
            self._transports.clear()
        self._local = threading.local()

    def __enter__(self) -> GliodeployClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- server and model ----------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Liveness/readiness of the server and of the model; never raises for a not-ready model.

        Raises :class:`~gliodeploy.client.errors.ServerUnavailableError` if the server cannot be reached.
        """
        live = self._retrying(lambda t: t.is_live())
        ready = self._retrying(lambda t: t.is_ready())
        try:
            model_ready = self._retrying(lambda t: t.is_model_ready(self.model, self.model_version))
        except GliodeployError:
            model_ready = False
        return {
            "url": self.endpoint.url,
            "protocol": self.endpoint.protocol,
            "live": live,
            "ready": ready,
            "model": self.model,
            "model_version": self.model_version or "latest",
            "model_ready": bool(model_ready),
        }

    def info(self, refresh: bool = False) -> ModelInfo:
        """Model metadata and config: version, fold count, threshold, preprocessing (cached)."""
        if self._info is not None and not refresh:
            return self._info
        meta = self._retrying(lambda t: t.model_metadata(self.model, self.model_version))
        config = self._retrying(lambda t: t.model_config(self.model, self.model_version))
        server = self._retrying(lambda t: t.server_metadata())
        self._info = parse_model_info(meta, config, server, requested_version=self.model_version)
        log.info(
            "model %s version %s on %s://%s: threshold %.4g, grid %s",
            self._info.name,
            self._info.version or "?",
            self.endpoint.protocol,
            self.endpoint.url,
            self._info.threshold,
            self._info.grid_shape,
        )
        return self._info

    # -- prediction ----------------------------------------------------------------------------
    def predict_volume(self, suv_grid_xyz: np.ndarray, *, source: str = "<array>") -> Prediction:
        """Predict from a brain-masked SUV volume already on the model grid, ``[x, y, z]``."""
        t0 = time.perf_counter()
        info = self.info()
        array = check_grid_array(suv_grid_xyz, info.grid_shape, source)
        pred = self._send_grid(array, info, source, {"read": 0.0, "suv": 0.0, "preprocess": 0.0}, t0)
        return replace(pred, provenance=provenance_block(info, self.model, server_preprocess=False))

    def predict_file(
        self,
        path: str | Path,
        *,
        weight_kg: float | None = None,
        injected_dose_bq: float | None = None,
        injection_time: str | None = None,
        scan_time: str | None = None,
        image_units: str | None = None,
        half_life_s: float | None = None,
        assume_suv: bool = False,
        participants_tsv: str | Path | None = None,
        server_preprocess: bool = False,
        series_uid: str | None = None,
    ) -> Prediction:
        """Read a NIfTI file or DICOM series, convert to SUV, preprocess, and predict.

        With ``server_preprocess=True`` the native SUV volume is sent to ``gliodeploy_native``,
        which resamples/masks/crops on the server (for clients that cannot run SimpleITK).
        ``series_uid`` picks the DICOM series of a folder holding several (else the PET series is
        chosen automatically; :attr:`Prediction.scan` says which and why).
        """
        t0 = time.perf_counter()
        info = self.info()
        timings: dict[str, float] = {}
        scan: dict[str, Any] = {}
        suv: dict[str, Any] = {}
        image = read_suv_image(
            path,
            timings,
            scan_facts=scan,
            suv_facts=suv,
            series_uid=series_uid,
            weight_kg=weight_kg,
            injected_dose_bq=injected_dose_bq,
            injection_time=injection_time,
            scan_time=scan_time,
            image_units=image_units,
            half_life_s=half_life_s,
            assume_suv=assume_suv,
            participants_tsv=participants_tsv,
        )
        if server_preprocess:
            timings["preprocess"] = 0.0
            pred = self._send_native(image, info, str(path), timings, t0)
            model = self.native_model
        else:
            array = to_model_grid(image, info, str(path), timings)
            pred = self._send_grid(array, info, str(path), timings, t0)
            model = self.model
        trail = provenance_block(info, model, server_preprocess=server_preprocess)
        return replace(pred, scan=scan, suv=suv, provenance=trail)

    def predict_many(
        self,
        paths: Sequence[str | Path],
        *,
        concurrency: int = 4,
        progress: Callable[[Prediction | ScanFailure], None] | None = None,
        **kwargs: Any,
    ) -> list[Prediction | ScanFailure]:
        """:meth:`predict_file` on many scans in parallel; results in input order.

        A scan that fails (bad file, missing SUV field, server error) becomes a :class:`ScanFailure`
        and the others go on. ``progress`` is called once per finished scan (from worker threads).
        The model info is fetched first, so a server that is down fails the whole call at once.
        """
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        self.info()

        def one(path: str | Path) -> Prediction | ScanFailure:
            try:
                result: Prediction | ScanFailure = self.predict_file(path, **kwargs)
            except GliodeployError as exc:
                result = ScanFailure(str(path), str(exc), type(exc).__name__, exc.exit_code)
            except Exception as exc:  # e.g. a reader bug on a corrupt file: report it, keep going
                result = ScanFailure(str(path), f"{type(exc).__name__}: {exc}", type(exc).__name__, 1)
            if isinstance(result, Prediction):
                log.info("%s: P(recurrence)=%.4f, timings %s", path, result.probability, result.timings)
            else:
                log.info("%s: failed (%s): %s", path, result.error_type, result.error)
            if progress is not None:
                progress(result)
            return result

        with ThreadPoolExecutor(max_workers=min(concurrency, max(1, len(paths)))) as pool:
            return list(pool.map(one, paths))

    # -- request -------------------------------------------------------------------------------
    def _input_dtype(self, info: ModelInfo) -> str:
        if self.fp16 and info.input_datatype != "FP16":
            raise ConfigError(
                f"--fp16: model {info.name!r} input {contract.INPUT_SUV!r} is {info.input_datatype}; "
                "Triton does "
                "not convert types, so FP16 needs a model exported with an FP16 input"
            )
        return info.input_datatype

    def _send_grid(
        self, array: np.ndarray, info: ModelInfo, source: str, timings: dict[str, float], t0: float
    ) -> Prediction:
        dtype = self._input_dtype(info)
        batch = array[None, None].astype(_NP_DTYPES[dtype], copy=False)
        t = time.perf_counter()
        out = self._retrying(
            lambda tr: tr.infer(
                self.model,
                self.model_version,
                {contract.INPUT_SUV: batch},
                _OUTPUTS,
                datatypes={contract.INPUT_SUV: dtype},
            )
        )
        timings["request"] = time.perf_counter() - t
        return self._prediction(out, info, source, timings, t0, self.model, info.version)

    def _send_native(
        self, image: Any, info: ModelInfo, source: str, timings: dict[str, float], t0: float
    ) -> Prediction:
        import SimpleITK as sitk

        if self.model_version:
            raise ConfigError(
                f"--model-version cannot be combined with --server-preprocess: {self.native_model!r} runs "
                "the ensemble version its own config names"
            )
        meta = self._native_meta()
        inputs = {
            contract.INPUT_NATIVE_VOLUME: sitk.GetArrayFromImage(image).astype(np.float32),
            contract.INPUT_SPACING: np.asarray(image.GetSpacing(), dtype=np.float64),
            contract.INPUT_ORIGIN: np.asarray(image.GetOrigin(), dtype=np.float64),
            contract.INPUT_DIRECTION: np.asarray(image.GetDirection(), dtype=np.float64),
        }
        datatypes = {}
        for name in list(inputs):
            spec = meta.get(name)
            if spec is None:
                raise InvalidResponseError(f"model {self.native_model!r} has no input {name!r}")
            if len(spec["shape"]) == inputs[name].ndim + 1:  # the model declares a batch dimension
                inputs[name] = inputs[name][None]
            datatypes[name] = spec["datatype"]
            inputs[name] = inputs[name].astype(_NP_DTYPES.get(spec["datatype"], np.float32), copy=False)
        t = time.perf_counter()
        out = self._retrying(
            lambda tr: tr.infer(self.native_model, "", inputs, _OUTPUTS, datatypes=datatypes)
        )
        timings["request"] = time.perf_counter() - t
        return self._prediction(out, info, source, timings, t0, self.native_model, info.version)

    def _native_meta(self) -> dict[str, dict[str, Any]]:
        meta = getattr(self, "_native_inputs", None)
        if meta is None:
            raw = self._retrying(lambda t: t.model_metadata(self.native_model, ""))
            meta = {i["name"]: i for i in raw.get("inputs", [])}
            self._native_inputs = meta
        return meta

    @staticmethod
    def _prediction(
        out: Mapping[str, np.ndarray],
        info: ModelInfo,
        source: str,
        timings: dict[str, float],
        t0: float,
        model: str,
        version: str,
    ) -> Prediction:
        prob = np.asarray(out[contract.OUTPUT_PROBABILITY], dtype=np.float64).reshape(-1)
        folds = np.asarray(out[contract.OUTPUT_FOLD_PROBABILITIES], dtype=np.float64).reshape(-1)
        if prob.size != 1 or folds.size < 1:
            raise InvalidResponseError(
                f"{source}: expected one probability and >= 1 fold probabilities, got shapes "
                f"{np.shape(prob)} and {np.shape(folds)}"
            )
        p = float(prob[0])
        if not (math.isfinite(p) and 0.0 <= p <= 1.0) or not np.all((folds >= 0) & (folds <= 1)):
            raise InvalidResponseError(f"{source}: the server returned probabilities outside [0, 1] ({p})")
        timings["total"] = time.perf_counter() - t0
        return Prediction(
            source=source,
            probability=p,
            label=int(p >= info.threshold),
            threshold=info.threshold,
            fold_probs=[float(f) for f in folds],
            fold_spread=float(folds.std()),
            fold_min=float(folds.min()),
            fold_max=float(folds.max()),
            model_name=model,
            model_version=version,
            timings={k: round(v, 6) for k, v in timings.items()},
        )


#: Reader metadata copied into :attr:`Prediction.scan`.
SCAN_FACTS: tuple[str, ...] = ("format", "series_uid", "series_description", "series_choice")


def read_suv_image(
    path: str | Path,
    timings: dict[str, float],
    *,
    scan_facts: dict[str, Any] | None = None,
    suv_facts: dict[str, Any] | None = None,
    **load_kwargs: Any,
) -> Any:
    """Read a NIfTI file or DICOM series as a checked SUV ``SimpleITK.Image`` (the client's reading step).

    ``load_kwargs`` go to :func:`gliodeploy.io.load_pet`; ``timings`` gets ``read`` and ``suv`` (s).
    ``scan_facts``, when given, gets what was read (:data:`SCAN_FACTS`: format, DICOM series UID and
    why that series was chosen) and the SHA-256 of the bytes read (:func:`provenance.input_facts`,
    counted in ``read``); ``suv_facts`` gets the SUV inputs used and their sources
    (:func:`provenance.suv_block`). Shared by :meth:`GliodeployClient.predict_file` and
    ``gliodeploy predict`` (offline).
    """
    from gliodeploy.io import load_pet

    t0 = time.perf_counter()
    pet = load_pet(path, **load_kwargs)
    if scan_facts is not None:
        scan_facts.update({k: pet.metadata[k] for k in SCAN_FACTS if pet.metadata.get(k) is not None})
        scan_facts.update(input_facts(pet.metadata, pet.source))
    if suv_facts is not None:
        suv_facts.update(suv_block(pet.metadata, pet.units))
    timings["read"] = time.perf_counter() - t0  # load_pet reads and converts to SUV in one pass
    t1 = time.perf_counter()
    check_native_image(pet.image, str(path))
    timings["suv"] = time.perf_counter() - t1  # validation of the SUV volume
    return pet.image


def to_model_grid(image: Any, info: ModelInfo, source: str, timings: dict[str, float]) -> np.ndarray:
    """The model's preprocessing (from ``info``) of a native SUV image: checked float32 ``[x, y, z]``.

    ``timings`` gets ``preprocess`` (s). Shared by the client and ``gliodeploy predict`` (offline).
    """
    from gliodeploy.preprocessing import PreprocessConfig, preprocess

    t0 = time.perf_counter()
    pre = preprocess(image, PreprocessConfig.from_dict(info.preprocessing))
    array = check_grid_array(pre.array, info.grid_shape, f"{source} (preprocessed)")
    timings["preprocess"] = time.perf_counter() - t0
    return array


def _param(config: Mapping[str, Any], key: str, model: str) -> str:
    params = config.get("parameters") or {}
    entry = params.get(key)
    if entry is None:
        raise InvalidResponseError(
            f"model {model!r}: its config has no parameters entry {key!r}; "
            "was it exported by `gliodeploy export`?"
        )
    value = entry.get("string_value") if isinstance(entry, Mapping) else entry
    if not isinstance(value, str):
        raise InvalidResponseError(f"model {model!r}: parameter {key!r} is not a string ({entry!r})")
    return value


def parse_model_info(
    meta: Mapping[str, Any],
    config: Mapping[str, Any],
    server: Mapping[str, Any],
    *,
    requested_version: str = "",
) -> ModelInfo:
    """Build :class:`ModelInfo` from KServe v2 metadata + Triton config dicts; reject what does not fit."""
    name = str(meta.get("name", "?"))
    inputs = {i.get("name"): i for i in meta.get("inputs", [])}
    outputs = {o.get("name"): o for o in meta.get("outputs", [])}
    if contract.INPUT_SUV not in inputs:
        raise InvalidResponseError(
            f"model {name!r} has no input {contract.INPUT_SUV!r} (inputs: {sorted(inputs)})"
        )
    missing = [o for o in _OUTPUTS if o not in outputs]
    if missing:
        raise InvalidResponseError(f"model {name!r} lacks output(s) {missing} (outputs: {sorted(outputs)})")
    shape = [int(s) for s in inputs[contract.INPUT_SUV].get("shape", [])]
    if len(shape) != 5 or any(s <= 0 for s in shape[2:]):
        raise InvalidResponseError(
            f"model {name!r}: input {contract.INPUT_SUV!r} shape {shape} is not [B, 1, X, Y, Z]"
        )
    fold_shape = [int(s) for s in outputs[contract.OUTPUT_FOLD_PROBABILITIES].get("shape", [])]
    folds = fold_shape[-1] if fold_shape and fold_shape[-1] > 0 else None
    try:
        threshold = float(_param(config, contract.PARAM_THRESHOLD, name))
        preprocessing = json.loads(_param(config, contract.PARAM_PREPROCESSING, name))
        params = config.get("parameters") or {}
        op_raw = params.get(contract.PARAM_OPERATING_POINT)
        operating_point = json.loads(_param(config, contract.PARAM_OPERATING_POINT, name)) if op_raw else None
        checksum_raw = params.get(contract.PARAM_MODEL_CHECKSUM)
        checksum = json.loads(_param(config, contract.PARAM_MODEL_CHECKSUM, name)) if checksum_raw else None
        runtime_raw = params.get(contract.PARAM_CPU_RUNTIME)
        cpu_runtime = json.loads(_param(config, contract.PARAM_CPU_RUNTIME, name)) if runtime_raw else None
    except ValueError as exc:
        raise InvalidResponseError(
            f"model {name!r}: unreadable gliodeploy parameter in its config: {exc}"
        ) from exc
    if not (0.0 < threshold < 1.0):
        raise InvalidResponseError(f"model {name!r}: decision threshold {threshold} is not in (0, 1)")
    if checksum is not None and not (
        isinstance(checksum, dict) and isinstance(checksum.get("sha256sums_sha256"), str)
    ):
        raise InvalidResponseError(
            f"model {name!r}: its published model checksum is malformed ({checksum!r})"
        )
    if operating_point is not None and (
        not isinstance(operating_point, dict) or operating_point.get("threshold") != threshold
    ):
        raise InvalidResponseError(
            f"model {name!r}: its published operating point does not match its threshold {threshold}"
        )
    grid = tuple(int(s) for s in preprocessing.get("shape", ()))
    if grid != tuple(shape[2:]):
        raise InvalidResponseError(
            f"model {name!r}: preprocessing grid {grid} does not match the input shape {tuple(shape[2:])}"
        )
    versions = [str(v) for v in meta.get("versions", [])]
    version = requested_version or (
        max(versions, key=int) if versions and all(v.isdigit() for v in versions) else ""
    )
    return ModelInfo(
        name=name,
        version=version,
        versions=versions,
        platform=str(meta.get("platform", config.get("platform", config.get("backend", "")))),
        input_datatype=str(inputs[contract.INPUT_SUV].get("datatype", "FP32")),
        grid_shape=(shape[2], shape[3], shape[4]),
        folds=folds,
        threshold=threshold,
        preprocessing=dict(preprocessing),
        server={k: server[k] for k in ("name", "version") if k in server},
        operating_point=operating_point,
        checksum=checksum,
        cpu_runtime=cpu_runtime if isinstance(cpu_runtime, dict) else None,
    )


def iter_ok(results: Iterable[Prediction | ScanFailure]) -> list[Prediction]:
    """The successful predictions of a batch."""
    return [r for r in results if isinstance(r, Prediction)]
