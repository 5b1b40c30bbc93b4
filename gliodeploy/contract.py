"""Names and conventions shared by export, serving and the client (no heavy imports).

Array convention everywhere in gliodeploy: a volume on the model grid is a float32 numpy
array indexed ``[x, y, z]`` (SimpleITK index order, i.e. ``GetArrayFromImage(img).T``),
shape ``(128, 128, 82)`` for the study's grid. Model input tensors are ``[B, 1, X, Y, Z]``.
"""

from __future__ import annotations

#: Label names, index = label value in manifests (0 = treatment-related change, 1 = recurrence).
LABEL_NAMES: tuple[str, str] = ("treatment-related change", "recurrence")

#: Triton model that takes SUV volumes already on the model grid (client-side geometry).
ENSEMBLE_MODEL = "gliodeploy_ensemble"
#: Triton model that resamples/masks/centres/crops a native-grid SUV volume on the server.
GEOMETRY_MODEL = "gliodeploy_geometry"
#: Triton ensemble that chains GEOMETRY_MODEL -> ENSEMBLE_MODEL (thin clients).
NATIVE_PIPELINE_MODEL = "gliodeploy_native"

#: Input of ENSEMBLE_MODEL: FP32 [B, 1, X, Y, Z] brain-masked SUV on the model grid (not normalised;
#: the intensity normalisation is part of the exported graph, exactly as in training).
INPUT_SUV = "suv"
#: Outputs of ENSEMBLE_MODEL.
OUTPUT_PROBABILITY = "probability"  # FP32 [B, 1]: mean of the folds' probabilities
OUTPUT_FOLD_PROBABILITIES = "fold_probabilities"  # FP32 [B, K]
OUTPUT_LOGIT = "logit"  # FP32 [B, 1]: logit of the ensemble probability

#: Inputs of GEOMETRY_MODEL / NATIVE_PIPELINE_MODEL (batch of one native volume per request).
INPUT_NATIVE_VOLUME = "native_suv"  # FP32 [Z, Y, X] as SimpleITK's GetArrayFromImage gives it
INPUT_SPACING = "spacing"  # FP64 [3] (x, y, z) mm
INPUT_ORIGIN = "origin"  # FP64 [3] mm
INPUT_DIRECTION = "direction"  # FP64 [9] row-major direction cosines

#: Config parameters of ENSEMBLE_MODEL that clients read to preprocess exactly as in training.
PARAM_PREPROCESSING = "gliodeploy_preprocessing"  # JSON of PreprocessConfig.to_dict()
PARAM_THRESHOLD = "gliodeploy_threshold"  # decision threshold on P(recurrence), as a string
#: JSON of the operating point (threshold, how it was chosen, expected sensitivity/specificity with
#: CIs on the out-of-fold predictions; gliodeploy.evaluation.operating_point). Equal to the latest
#: version's metadata.json, which its SHA256SUMS covers: `gliodeploy verify` refuses any edit.
PARAM_OPERATING_POINT = "gliodeploy_operating_point"
#: JSON ``{"version": N, "sha256sums_sha256": HEX, "gliodeploy": X.Y.Z}``: the SHA-256 of version N's
#: ``SHA256SUMS`` file (which pins every file of that version: graph, model.py, metadata.json) and the
#: gliodeploy that exported it. Clients copy it into each prediction's audit trail.
PARAM_MODEL_CHECKSUM = "gliodeploy_model_checksum"
#: JSON ``{"engine": ..., "precision": ...}`` of the python-backend (``local``) configuration: the CPU
#: engine/precision the version was exported with (gliodeploy.runtime.engines); ``gliodeploy serve``
#: publishes the one it runs, with ``"auto"``'s reason when chosen by measurement.
PARAM_CPU_RUNTIME = "gliodeploy_cpu_runtime"


def describe_operating_point(op: dict) -> str:
    """One line for people: ``threshold 0.61 (youden on 100 out-of-fold predictions, final validation);
    expected sensitivity 0.80 [0.70-0.89], specificity 0.62 [0.45-0.78]`` (torch-free: the client uses it).
    """

    def ci(m: dict) -> str:
        return f"{m['value']:.2f} [{m['ci_low']:.2f}-{m['ci_high']:.2f}]"

    if not op.get("sensitivity") or not op.get("specificity"):
        return (
            f"threshold {op['threshold']:.4g} (fixed by the user; never measured on out-of-fold predictions)"
        )
    temp = f", temperature {op['temperature']:.3g}" if op.get("temperature") else ""
    honest = " - selected on these patients, optimistic" if op.get("validation_mode") == "study" else ""
    return (
        f"threshold {op['threshold']:.4g} ({op['method']} on {op['n']} out-of-fold predictions, "
        f"{op['validation_mode']} validation{temp}{honest}); expected sensitivity {ci(op['sensitivity'])}, "
        f"specificity {ci(op['specificity'])}"
    )
