"""`gliodeploy pack-env` builds the python-backend environment, and the bundled Triton server runs the
server-side geometry model from it alone (no project venv on PATH), both ways the deployment may use it:
unpacked with its bin/ first on PATH (deploy/kubernetes) and through Triton's EXECUTION_ENV_PATH.

Building the pack takes ~10 s here (pip from the local index, gzip level 1); each server start 3-5 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gliodeploy import contract
from gliodeploy.errors import ServerError
from gliodeploy.serving import TritonServer

pytestmark = [pytest.mark.server, pytest.mark.slow]
# Only the system's own folders besides the pack: nothing from the project's venv can be imported.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documented command, run as a user would."""
    out = tmp_path_factory.mktemp("pack") / "gliodeploy-env.tar.gz"
    proc = subprocess.run(
        [sys.executable, "-m", "gliodeploy.cli", "pack-env", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "numpy<2, SimpleITK" in proc.stdout
    return out


@pytest.fixture(scope="module")
def unpacked(pack: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pack unpacked where an init container would (another folder than where it was built)."""
    dest = tmp_path_factory.mktemp("opt") / "gliodeploy-env"
    dest.mkdir()
    with tarfile.open(pack) as tar:
        tar.extractall(dest, filter="tar" if hasattr(tarfile, "tar_filter") else None)
    return dest


class PackedEnvServer(TritonServer):
    """The bundled server with the pack's bin/ (or nothing) first on PATH instead of the project's venv."""

    def __init__(self, *args: object, env_bin: Path | None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.env_bin = env_bin

    def _env(self, install):  # noqa: ANN001, ANN202 - TritonServer._env
        env = super()._env(install)
        env["PATH"] = os.pathsep.join([str(self.env_bin), SYSTEM_PATH] if self.env_bin else [SYSTEM_PATH])
        for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(name, None)
        return env


def _native_request(url: str) -> np.ndarray:
    """One synthetic native volume through gliodeploy_geometry; returns its model-grid output."""
    import tritonclient.http as httpclient

    rng = np.random.default_rng(0)
    volume = rng.gamma(2.0, 0.5, size=(40, 48, 44)).astype(np.float32)
    arrays = {
        contract.INPUT_NATIVE_VOLUME: volume,
        contract.INPUT_SPACING: np.array([4.0, 4.0, 4.0]),
        contract.INPUT_ORIGIN: np.array([-88.0, -96.0, -80.0]),
        contract.INPUT_DIRECTION: np.eye(3).reshape(-1),
    }
    inputs = []
    for name, arr in arrays.items():
        inp = httpclient.InferInput(name, list(arr.shape), "FP32" if arr.dtype == np.float32 else "FP64")
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    client = httpclient.InferenceServerClient(url)
    return client.infer(contract.GEOMETRY_MODEL, inputs).as_numpy(contract.INPUT_SUV)


def _expected(repo: Path) -> np.ndarray:
    from gliodeploy.preprocessing import PreprocessConfig, preprocess

    version = max(int(p.name) for p in (repo / contract.GEOMETRY_MODEL).iterdir() if p.name.isdigit())
    cfg = json.loads((repo / contract.GEOMETRY_MODEL / str(version) / "preprocessing.json").read_text())
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.gamma(2.0, 0.5, size=(40, 48, 44)).astype(np.float32))
    image.SetSpacing([4.0, 4.0, 4.0])
    image.SetOrigin([-88.0, -96.0, -80.0])
    return preprocess(image, PreprocessConfig.from_dict(cfg)).array[np.newaxis, np.newaxis]


def _serve_geometry(repo: Path, env_bin: Path | None) -> np.ndarray:
    server = PackedEnvServer(repo, env_bin=env_bin, startup_timeout=90)
    server.load_models = [contract.GEOMETRY_MODEL]
    with server:
        return _native_request(server.http_url)


def test_pack_is_relocatable_and_complete(pack: Path, unpacked: Path) -> None:
    info = json.loads((unpacked / "pack.json").read_text())
    assert info["python"] == "{}.{}".format(*sys.version_info[:2])
    site = unpacked / "lib" / f"python{info['python']}" / "site-packages"
    assert (site / "SimpleITK").is_dir() and (site / "gliodeploy" / "preprocessing").is_dir()
    assert not list(site.glob("numpy-2*")), "the python backend needs numpy < 2"
    activate = (unpacked / "bin" / "activate").read_text()
    assert str(pack.parent) not in activate and "BASH_SOURCE" in activate  # no build path inside
    # The unpacked environment runs on its own, from its new folder.
    proc = subprocess.run(
        [
            unpacked / "bin" / "python",
            "-c",
            "import SimpleITK, numpy, gliodeploy.preprocessing, sys; print(sys.prefix)",
        ],
        capture_output=True,
        text=True,
        env={"PATH": SYSTEM_PATH},
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == str(unpacked), proc.stderr


def test_without_the_pack_the_geometry_model_cannot_load(tiny_repository: Path) -> None:
    """Control: without the project's venv on PATH the model has nothing to import (the model loads from
    the pack in the tests below, not from anything else on this machine)."""
    with pytest.raises(ServerError, match="No module named 'numpy'"):
        server = PackedEnvServer(tiny_repository, env_bin=None, startup_timeout=30)
        server.load_models = [contract.GEOMETRY_MODEL]
        with server:
            pass


def test_geometry_model_runs_from_the_unpacked_env_first_on_path(
    tiny_repository: Path, unpacked: Path
) -> None:
    np.testing.assert_allclose(
        _serve_geometry(tiny_repository, unpacked / "bin"), _expected(tiny_repository), atol=1e-5
    )


def test_geometry_model_runs_through_execution_env_path(
    tiny_repository: Path, pack: Path, tmp_path: Path
) -> None:
    """Triton's own mechanism: the python backend unpacks the tarball and sources its bin/activate."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repository, repo)
    for config in (repo / contract.GEOMETRY_MODEL).glob("**/*.pbtxt"):
        text = config.read_text()
        param = f'parameters {{ key: "EXECUTION_ENV_PATH" value: {{ string_value: "{pack}" }} }}\n'
        config.write_text(text + param)
    np.testing.assert_allclose(_serve_geometry(repo, None), _expected(repo), atol=1e-5)
