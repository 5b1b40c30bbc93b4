"""``gliodeploy pack-env``: a relocatable Python environment for Triton's python backend.

The server-side preprocessing model (``gliodeploy/serving/triton_models/geometry_model.py``) imports
numpy, SimpleITK and gliodeploy, which NVIDIA's stock Triton image does not have. The pack is a virtual
environment built on the *target's* interpreter (the image's ``/usr/bin/python3``: same Python version
as its python-backend stub, and a path that exists there), with those packages, gliodeploy's own
source, and a relocatable ``bin/activate``; it ships as a ``.tar.gz`` beside the model repository.

Two ways to use it, both how Triton itself finds a model's packages (its stub embeds Python and takes
the first ``python3`` on ``PATH`` that sits in an environment):

* unpack it (an init container) and put its ``bin/`` first on the server's ``PATH``
  (``deploy/kubernetes/``): the exported, checksummed repository stays untouched;
* or name the tarball in a model's ``parameters { key: "EXECUTION_ENV_PATH" ... }``: the python backend
  unpacks it and sources ``bin/activate`` itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from gliodeploy.errors import ConfigError, GliodeployError

#: What the python-backend models import (besides gliodeploy); numpy < 2: the python backend's tensors
#: fail with numpy 2 (shared/notes/dependencies.md).
PACK_REQUIREMENTS = ("numpy<2", "SimpleITK>=2.3")

_ACTIVATE = """\
# gliodeploy pack-env: relocatable activation, sourced by Triton's python backend (EXECUTION_ENV_PATH)
# or by a shell. The environment is wherever this file is, whatever folder it was unpacked into.
_gd_env="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export VIRTUAL_ENV="$_gd_env"
export PATH="$_gd_env/bin:$PATH"
unset PYTHONHOME _gd_env
"""


def _interpreter(python: str | None) -> tuple[str, str]:
    """(absolute path of the base interpreter, "X.Y") of ``python`` (default: this one's base)."""
    exe = python or getattr(sys, "_base_executable", sys.executable)
    found = shutil.which(exe)
    if found is None:
        raise ConfigError(f"--python {exe}: no such interpreter")
    code = (
        "import sys; print(getattr(sys, '_base_executable', sys.executable)); "
        "print('%d.%d' % sys.version_info[:2])"
    )
    proc = subprocess.run([found, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ConfigError(f"--python {exe} does not run: {proc.stderr.strip()}")
    base, version = proc.stdout.split()
    return base, version


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise GliodeployError(f"{what} failed:\n{tail}")


def _copy_gliodeploy(site: Path) -> None:
    """gliodeploy's own (pure Python) package, without bytecode: what ``import gliodeploy`` needs."""
    import gliodeploy

    src = Path(gliodeploy.__file__).parent
    shutil.copytree(src, site / "gliodeploy", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def build_env(
    out: str | os.PathLike[str],
    *,
    python: str | None = None,
    extra: tuple[str, ...] = (),
    pip_args: tuple[str, ...] = (),
    compresslevel: int = 1,
) -> dict[str, object]:
    """Build the packed environment ``out`` (``.tar.gz``); return what went in (also in ``pack.json``).

    Args:
        out: the tarball to write (atomically: a temporary name, then renamed).
        python: target interpreter (default: this Python's base interpreter); its version must be the
            Triton stub's and its path must exist where Triton runs.
        extra: more requirements (e.g. ``onnxruntime`` for the ``local`` python-backend ONNX model).
        pip_args: passed to ``pip install`` (``--index-url``, ``--find-links``, ``--no-index``...).
        compresslevel: gzip level (1: fast; the pack is mostly compiled libraries).
    """
    out = Path(out)
    if not out.name.endswith(".tar.gz"):
        raise ConfigError(f"{out}: the packed environment must be a .tar.gz (Triton unpacks that)")
    base, version = _interpreter(python)
    out.parent.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gliodeploy-pack-", dir=out.parent) as tmp:
        env = Path(tmp) / "env"
        _run([base, "-m", "venv", "--without-pip", str(env)], f"{base} -m venv")
        site = env / "lib" / f"python{version}" / "site-packages"
        requirements = [*PACK_REQUIREMENTS, *extra]
        # This pip installs into the target interpreter's environment (pip >= 22.3: --python), so the
        # target needs no pip of its own.
        pip = [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install"]
        _run([*pip, "--no-compile", "--disable-pip-version-check", *pip_args, *requirements], "pip install")
        _copy_gliodeploy(site)
        for script in ("activate.csh", "activate.fish", "Activate.ps1"):  # absolute paths inside
            (env / "bin" / script).unlink(missing_ok=True)
        (env / "bin" / "activate").write_text(_ACTIVATE, encoding="utf-8")
        from gliodeploy import __version__

        info = {
            "python": version,
            "interpreter": base,
            "requirements": requirements,
            "gliodeploy": __version__,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (env / "pack.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w:gz", compresslevel=compresslevel) as tar:
            for item in sorted(env.iterdir()):  # entries at the top: Triton sources ./bin/activate
                tar.add(item, arcname=item.name)
        os.replace(partial, out)
    info["seconds"] = round(time.perf_counter() - tic, 1)
    info["bytes"] = out.stat().st_size
    return info
