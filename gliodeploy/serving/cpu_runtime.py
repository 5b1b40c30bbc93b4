"""The CPU engine ``gliodeploy serve`` runs, chosen before the server starts and published in the
served configuration (``gliodeploy_cpu_runtime``), so ``gliodeploy-client info`` shows what runs.

The exported choice (the ``local`` configuration's parameter) or the command line's; ``auto`` is
resolved here, in the serve process, by :func:`gliodeploy.runtime.engines.resolve_version` on the
served version's reference cases, and the concrete engine/precision (with the reason) replaces it in
the private copy Triton serves. The python-backend model then creates exactly that engine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gliodeploy import contract
from gliodeploy.errors import ConfigError


def _config_path(repo: Path, config_name: str) -> Path:
    return repo / contract.ENSEMBLE_MODEL / "configs" / f"{config_name}.pbtxt"


def choose_served_runtime(
    repo: Path,
    config_name: str,
    engine: str | None,
    precision: str | None,
    *,
    threads: int | None = None,
) -> dict[str, Any]:
    """``{"engine", "precision"[, "auto"]}`` to serve from ``repo`` (the verified copy).

    ``engine``/``precision`` None = the exported choice. ``repo`` must be the served private copy (its
    parent folder takes ONNX Runtime's scratch files while ``auto`` measures). Raises
    :class:`ConfigError` for a choice that cannot run here (unknown name, OpenVINO missing, bf16 on a
    CPU without it, no int8 graph).
    """
    from gliodeploy.export.repository import parse_config, versions
    from gliodeploy.runtime.engines import AUTO, EngineChoice, check_names, resolve_version, unavailable

    if config_name != "local":
        if engine or precision:
            raise ConfigError(
                f"--cpu-engine/--cpu-precision apply to the local configuration (python backend), "
                f"not {config_name!r}"
            )
        return {}
    params = {k: v.string_value for k, v in parse_config(_config_path(repo, config_name)).parameters.items()}
    exported = json.loads(params.get(contract.PARAM_CPU_RUNTIME) or "{}")  # older exports: none
    engine = engine or exported.get("engine", "onnxruntime")
    precision = precision or exported.get("precision", "fp32")
    check_names(engine, precision)
    if threads is None:
        threads = int(params.get("intra_op_thread_count") or 0)
    version_dir = repo / contract.ENSEMBLE_MODEL / str(max(versions(repo / contract.ENSEMBLE_MODEL)))
    if AUTO not in (engine, precision):  # nothing to measure: check it can run, load nothing here
        choice = EngineChoice(engine, precision)
        why = unavailable(choice, version_dir / "model.onnx")
        if why:
            raise ConfigError(f"{choice}: {why}")
        return choice.to_dict()
    # ONNX Runtime leaves a session file in $TMPDIR: keep it in the server's private folder (removed
    # at stop), so that serving leaves nothing behind.
    scratch = repo.parent / "measure-tmp"
    scratch.mkdir(mode=0o700, exist_ok=True)
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(scratch)
    try:
        chosen, decision = resolve_version(version_dir, engine, precision, threads=threads)
    finally:
        if previous is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous
    runtime: dict[str, Any] = chosen.choice.to_dict()
    if decision is not None:
        runtime["auto"] = f"auto: {decision.reason}"
    del chosen  # the served model loads its own; only the choice travels
    return runtime


def publish_runtime(repo: Path, config_name: str, runtime: dict[str, Any]) -> None:
    """Write ``runtime`` as ``gliodeploy_cpu_runtime`` into ``repo``'s ensemble ``config_name`` config."""
    from gliodeploy.export.repository import config_text, parse_config
    from gliodeploy.utils.atomic import atomic_write

    path = _config_path(repo, config_name)
    cfg = parse_config(path)
    cfg.parameters[contract.PARAM_CPU_RUNTIME].string_value = json.dumps(runtime, sort_keys=True)
    atomic_write(path, config_text(cfg))
