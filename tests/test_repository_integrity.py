"""A tamper-proof model repository and atomic publishing (gliodeploy/export/integrity.py, publish.py).

Every attack goes through the real ``gliodeploy verify`` (and ``gliodeploy serve``, which verifies
before starting Triton) and must end with one ``error:`` line, a non-zero exit code and nothing served.
The repositories are copies of one export made here (``pristine``), never served by another test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gliodeploy import contract
from gliodeploy.errors import ModelError
from gliodeploy.export.modelcard import CHECKSUMS, verify_repository
from gliodeploy.export.repository import MODELS, config_text, parse_config

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*brain mask lies outside the model grid:UserWarning"),
    pytest.mark.timeout(300),  # a refused repository that got served would block `serve` forever
]

ENS, GEO, NAT = contract.ENSEMBLE_MODEL, contract.GEOMETRY_MODEL, contract.NATIVE_PIPELINE_MODEL


@pytest.fixture(scope="module")
def pristine(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh export of ``tiny_run`` (version 1) that no server ever reads."""
    from gliodeploy.export.pipeline import export_run

    repo = tmp_path_factory.mktemp("pristine") / "model_repository"
    export_run(tiny_run, repo, threshold=0.5)
    return repo


@pytest.fixture(scope="module")
def exporter(tiny_run: Path):  # noqa: ANN201 - returns a callable
    """Export ``tiny_run`` into a repository without regenerating parity scans (cheap, same code path)."""
    from gliodeploy.export.pipeline import export_models, resolve_operating_point, synthetic_parity_inputs
    from gliodeploy.preprocessing import PreprocessConfig
    from gliodeploy.training.rundir import RunDir

    run = RunDir(tiny_run)
    plans, models = run.plans(), run.load_fold_models()
    op = resolve_operating_point(tiny_run, 0.5)
    scans = synthetic_parity_inputs(PreprocessConfig.from_dict(plans["preprocessing"]))

    def export(repo: Path):  # noqa: ANN202
        return export_models(models, plans, repo, parity_inputs=scans, run_dir=tiny_run, operating_point=op)

    return export


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model_repository"
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _snapshot(repo: Path) -> dict[str, bytes]:
    return {p.relative_to(repo).as_posix(): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from gliodeploy.cli import app
    from gliodeploy.cli_utils import run_app

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_app(app, argv)
    return int(exc.value.code or 0), capsys.readouterr().err


def _refused(repo: Path, capsys: pytest.CaptureFixture[str], *needles: str, serve: bool = True) -> str:
    """``verify`` (and ``serve``, which verifies before starting Triton) refuse ``repo``: one error line
    naming ``needles``, exit code 4, no server started (serve would otherwise block until the timeout)."""
    errors = []
    for argv in (["verify", str(repo)], ["serve", str(repo), "--startup-timeout", "30"])[: 2 if serve else 1]:
        code, err = _cli(argv, capsys)
        assert code == ModelError.exit_code, err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        for needle in needles:
            assert needle in err, err
        errors.append(err)
    return errors[0]


# ---- 1. every byte the server loads or a client trusts is covered -------------------------------------
def test_export_writes_a_manifest_over_every_file(pristine: Path) -> None:
    assert verify_repository(pristine) == {m: [1] for m in MODELS}
    manifest = (pristine / CHECKSUMS).read_text().splitlines()
    names = {line.split("  ", 1)[1] for line in manifest}
    files = {p.relative_to(pristine).as_posix() for p in pristine.rglob("*") if p.is_file()}
    assert names == files - {CHECKSUMS}
    assert f"{ENS}/config.pbtxt" in names and f"{ENS}/configs/local.pbtxt" in names
    assert f"{GEO}/1/model.py" in names and f"{ENS}/1/{CHECKSUMS}" in names
    # The usual tool checks it too.
    proc = subprocess.run(["sha256sum", "--quiet", "-c", CHECKSUMS], cwd=pristine, capture_output=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _edit(path: Path, change) -> None:  # noqa: ANN001 - change(ModelConfig) edits it in place
    cfg = parse_config(path)
    change(cfg)
    path.write_text(config_text(cfg))


CONFIG_EDITS = {
    "backend": (f"{ENS}/config.pbtxt", lambda c: setattr(c, "backend", "python")),
    "default_model_filename": (
        f"{ENS}/configs/cpu.pbtxt",
        lambda c: setattr(c, "default_model_filename", "m.onnx"),
    ),
    "instance_group": (f"{ENS}/configs/local.pbtxt", lambda c: setattr(c.instance_group[0], "count", 8)),
    "input_dims": (f"{ENS}/configs/local.pbtxt", lambda c: c.input[0].dims.__setitem__(1, 64)),
    "max_batch_size": (f"{ENS}/config.pbtxt", lambda c: setattr(c, "max_batch_size", 64)),
    "geometry_backend_param": (
        f"{GEO}/configs/local.pbtxt",
        lambda c: c.parameters["EXECUTION_MODE"].__setattr__("string_value", "x"),
    ),
    "ensemble_step_version": (
        f"{NAT}/config.pbtxt",
        lambda c: setattr(c.ensemble_scheduling.step[1], "model_version", 1),
    ),
}


@pytest.mark.parametrize("edit", sorted(CONFIG_EDITS))
def test_any_config_edit_is_refused(pristine: Path, tmp_path: Path, capsys, edit: str) -> None:
    repo = _copy(pristine, tmp_path)
    rel, change = CONFIG_EDITS[edit]
    _edit(repo / rel, change)
    err = _refused(repo, capsys, rel, "was modified after export", "--profile")
    assert "instance groups" in err  # says how a deployment changes them instead


def test_repository_without_manifest_is_refused_and_reexport_adds_it(
    pristine: Path, tmp_path: Path, capsys, exporter
) -> None:
    repo = _copy(pristine, tmp_path)
    (repo / CHECKSUMS).unlink()  # what exports before the manifest wrote
    _refused(repo, capsys, f"{repo / CHECKSUMS} is missing", "re-run `gliodeploy export`")
    v1 = _snapshot(repo / ENS / "1")
    assert exporter(repo).version == 2
    assert verify_repository(repo) == {m: [1, 2] for m in MODELS}
    assert _snapshot(repo / ENS / "1") == v1  # the earlier version is carried, unchanged


def test_manifest_lines_are_checked(pristine: Path, tmp_path: Path, capsys) -> None:
    repo = _copy(pristine, tmp_path)
    with open(repo / CHECKSUMS, "a") as fh:
        fh.write("not a checksum line\n")
    _refused(repo, capsys, "malformed line")
    repo = _copy(pristine, tmp_path / "b")
    (repo / GEO / "configs" / "cpu.pbtxt").unlink()
    _refused(repo, capsys, "missing", f"{GEO}/configs/cpu.pbtxt")


# ---- 2. a path parameter never leaves its version folder --------------------------------------------
PATH_EDITS = {
    "onnx_file_absolute": (f"{ENS}/configs/local.pbtxt", "onnx_file", "/tmp/evil/model.onnx", "absolute"),
    "onnx_file_dotdot": (f"{ENS}/configs/local.pbtxt", "onnx_file", "../../../evil.onnx", "escapes"),
    "onnx_file_sneaky": (f"{ENS}/configs/local.pbtxt", "onnx_file", "sub/../../x.onnx", "escapes"),
    "onnx_file_folder": (f"{ENS}/configs/local.pbtxt", "onnx_file", ".", "escapes"),
    "execution_env": (
        f"{GEO}/configs/local.pbtxt",
        "EXECUTION_ENV_PATH",
        "$$TRITON_MODEL_DIRECTORY/env.tgz",
        "variable",
    ),
    "default_model_filename": (f"{ENS}/config.pbtxt", None, "/models/evil.onnx", "absolute"),
}


@pytest.mark.parametrize("edit", sorted(PATH_EDITS))
def test_path_parameters_outside_the_version_folder_are_refused(
    pristine: Path, tmp_path: Path, capsys, edit: str
) -> None:
    repo = _copy(pristine, tmp_path)
    rel, key, value, why = PATH_EDITS[edit]

    def change(cfg) -> None:  # noqa: ANN001
        if key is None:
            cfg.default_model_filename = value
        else:
            cfg.parameters[key].string_value = value

    _edit(repo / rel, change)
    err = _refused(repo, capsys, rel, repr(value), why, "version folder")
    assert "was modified" not in err  # named for what it is, before the checksum


def test_python_backend_model_refuses_an_outside_onnx_file(pristine: Path, tmp_path: Path) -> None:
    """Even on a server started without verify, the shipped model.py opens no file outside its version."""
    from gliodeploy.errors import ServerError
    from gliodeploy.serving import TritonServer

    repo = _copy(pristine, tmp_path)
    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(repo / ENS / "1" / "model.onnx", outside)  # a valid graph: only the location is wrong
    _edit(
        repo / ENS / "configs" / "local.pbtxt",
        lambda c: c.parameters["onnx_file"].__setattr__("string_value", str(outside)),
    )
    server = TritonServer(repo, startup_timeout=60, log_file=tmp_path / "triton.log")
    with pytest.raises(ServerError) as exc:
        server.start()
    log = (tmp_path / "triton.log").read_text()
    assert "is not a file inside the version folder" in log, str(exc.value)[-2000:]


# ---- 3. only the models export writes; no unknown file or folder anywhere ------------------------------
def _extra_model(repo: Path) -> str:
    """A python-backend model dropped beside ours, listed in the manifest as an attacker would."""
    evil = repo / "gliodeploy_extra"
    (evil / "1").mkdir(parents=True)
    (evil / "1" / "model.py").write_text("import os\nos.system('touch /tmp/pwned')\n")
    cfg = parse_config(repo / GEO / "configs" / "local.pbtxt")
    cfg.name = "gliodeploy_extra"
    (evil / "config.pbtxt").write_text(config_text(cfg))
    return "gliodeploy_extra"


def _add_file(rel: str, data: bytes = b"x"):  # noqa: ANN202
    def add(repo: Path) -> str:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(data)
        return rel

    return add


def _add_folder(rel: str):  # noqa: ANN202
    def add(repo: Path) -> str:
        (repo / rel).mkdir(parents=True)
        return rel

    return add


def _symlinked_graph(repo: Path) -> str:
    graph = repo / ENS / "1" / "model.onnx"
    elsewhere = repo.parent / "model.onnx"
    shutil.move(graph, elsewhere)
    graph.symlink_to(elsewhere)  # same bytes, so every checksum still matches
    return f"{ENS}/1/model.onnx"


UNKNOWN = {
    "extra_model_folder": (_extra_model, "Triton would load it"),
    "root_file": (_add_file("notes.txt"), "not written by gliodeploy export"),
    "root_hidden_file": (_add_file(".env"), "not written by gliodeploy export"),
    "model_folder_file": (_add_file(f"{ENS}/config.pbtxt.bak"), "not written by gliodeploy export"),
    "unknown_config": (_add_file(f"{GEO}/configs/gpu2.pbtxt"), "not written by gliodeploy export"),
    "version_zero_padded": (_add_folder(f"{NAT}/01"), "not written by gliodeploy export"),
    "version_subfolder": (_add_folder(f"{ENS}/1/extra"), "not written by gliodeploy export"),
    "version_hidden_file": (_add_file(f"{GEO}/1/.model.py.swp"), "not written by gliodeploy export"),
    "version_extra_file": (_add_file(f"{GEO}/1/extra.bin"), "not written by gliodeploy export"),
    "symlink": (_symlinked_graph, "symbolic link"),
}


@pytest.mark.parametrize("case", sorted(UNKNOWN))
def test_unknown_files_and_folders_are_named(pristine: Path, tmp_path: Path, capsys, case: str) -> None:
    repo = _copy(pristine, tmp_path)
    add, why = UNKNOWN[case]
    rel = add(repo)
    # Even listed in the manifest (an attacker rewrites it too), an unknown entry is refused by layout,
    # except a file inside a version folder, which its own SHA256SUMS must list.
    with open(repo / CHECKSUMS, "a") as fh:
        for p in sorted((repo / rel).rglob("*") if (repo / rel).is_dir() else [repo / rel]):
            if p.is_file():
                fh.write(f"{'0' * 64}  {p.relative_to(repo).as_posix()}\n")
    # serve snapshots by copying (links followed): the symlink case is refused by verify only.
    _refused(repo, capsys, str(repo / rel), why, serve=case != "symlink")


def test_export_refuses_to_drop_an_unknown_entry(pristine: Path, tmp_path: Path, capsys, tiny_run) -> None:
    repo = _copy(pristine, tmp_path)
    _extra_model(repo)
    before = _snapshot(repo)
    code, err = _cli(["export", str(tiny_run), "--out", str(repo), "--threshold", "0.5"], capsys)
    assert code == ModelError.exit_code and "gliodeploy_extra" in err and "Traceback" not in err, err
    assert _snapshot(repo) == before  # nothing lost, nothing written
    assert not list(tmp_path.glob(".model_repository.*"))


# ---- 4. no bytecode beside the verified model.py --------------------------------------------------------
def test_pycache_beside_model_py_is_refused(pristine: Path, tmp_path: Path, capsys) -> None:
    repo = _copy(pristine, tmp_path)
    pyc = f"{ENS}/1/__pycache__/model.cpython-311.pyc"
    _add_file(pyc, b"\x00bytecode that would run instead of model.py")(repo)
    # Listed in both checksum files, as an attacker would: still refused.
    for sums, rel in (
        (repo / ENS / "1" / CHECKSUMS, "__pycache__/model.cpython-311.pyc"),
        (repo / CHECKSUMS, pyc),
    ):
        with open(sums, "a") as fh:
            fh.write(f"{'0' * 64}  {rel}\n")
    _refused(repo, capsys, str(repo / ENS / "1" / "__pycache__"), "bytecode", "private copy")


def test_export_drops_bytecode_left_by_an_older_server(pristine: Path, tmp_path: Path, exporter) -> None:
    repo = _copy(pristine, tmp_path)
    _add_file(f"{GEO}/1/__pycache__/model.cpython-311.pyc")(repo)
    assert exporter(repo).version == 2
    assert not list(repo.rglob("__pycache__"))
    assert verify_repository(repo) == {m: [1, 2] for m in MODELS}


# ---- 5. one export appears whole or not at all ------------------------------------------------------------
class _Crash(BaseException):
    """What a kill at that instant would leave, minus the kill (the staging cleanup still runs)."""


def _crash(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    raise _Crash


def _leftovers(repo: Path) -> list[Path]:
    return sorted(repo.parent.glob(f".{repo.name}.*"))


@pytest.mark.parametrize("step", ["link_versions", "write_manifest", "fsync_tree", "exchange"])
def test_crash_before_the_swap_leaves_exactly_the_old_repository(
    pristine: Path, tmp_path: Path, monkeypatch, capsys, exporter, step: str
) -> None:
    repo = _copy(pristine, tmp_path)
    before = _snapshot(repo)
    monkeypatch.setattr(f"gliodeploy.export.publish.{step}", _crash)
    with pytest.raises(_Crash):
        exporter(repo)
    assert _snapshot(repo) == before and not _leftovers(repo)
    assert _cli(["verify", str(repo)], capsys)[0] == 0


def test_fallback_swap_without_rename_exchange(
    pristine: Path, tmp_path: Path, monkeypatch, capsys, exporter
) -> None:
    """File systems without RENAME_EXCHANGE: two renames; a crash between them is repaired (rolled back)."""
    repo = _copy(pristine, tmp_path)
    before = _snapshot(repo)
    monkeypatch.setattr("gliodeploy.export.publish.exchange", lambda a, b: False)
    monkeypatch.setattr("gliodeploy.export.publish.move_into_place", _crash)
    with pytest.raises(_Crash):
        exporter(repo)
    assert not repo.exists()  # the instant between the two renames
    code, err = _cli(["verify", str(repo)], capsys)
    assert code == ModelError.exit_code and "interrupted while swapping" in err and "rename" in err, err
    monkeypatch.setattr("gliodeploy.export.publish.move_into_place", os.rename)
    assert exporter(repo).version == 2  # the old state is put back first, then the export proceeds
    assert verify_repository(repo) == {m: [1, 2] for m in MODELS} and not _leftovers(repo)
    assert _snapshot(repo / ENS / "1") == {
        k[len(f"{ENS}/1/") :]: v for k, v in before.items() if k.startswith(f"{ENS}/1/")
    }


def test_sigkill_right_after_the_swap(pristine: Path, tmp_path: Path, tiny_run: Path, exporter) -> None:
    """A real SIGKILL (no cleanup at all) between the swap and the removal of the old state."""
    repo = _copy(pristine, tmp_path)
    script = (
        "import os, signal, sys\n"
        "import gliodeploy.export.publish as publish\n"
        "publish.remove_old_state = lambda old: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from gliodeploy.export.pipeline import export_run\n"
        "export_run(sys.argv[1], sys.argv[2], threshold=0.5)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tiny_run), str(repo)], capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert verify_repository(repo) == {m: [1, 2] for m in MODELS}  # exactly the new state
    stale = _leftovers(repo)
    assert len(stale) == 1 and verify_repository(stale[0]) == {m: [1] for m in MODELS}  # the old state
    assert exporter(repo).version == 3  # the next export removes the stale state
    assert not _leftovers(repo) and verify_repository(repo) == {m: [1, 2, 3] for m in MODELS}


def test_concurrent_export_is_refused(pristine: Path, tmp_path: Path, capsys, tiny_run: Path) -> None:
    from gliodeploy.export.publish import RepositoryUpdate

    repo = _copy(pristine, tmp_path)
    before = _snapshot(repo)
    with RepositoryUpdate(repo):  # another export is building the next state
        code, err = _cli(["export", str(tiny_run), "--out", str(repo), "--threshold", "0.5"], capsys)
    assert code == ModelError.exit_code and "another gliodeploy export" in err, err
    assert _snapshot(repo) == before and not _leftovers(repo)


# ---- 6. a staging folder left inside a repository --------------------------------------------------------
def test_leftover_staging_folder_is_reported_and_cleaned(
    pristine: Path, tmp_path: Path, capsys, exporter
) -> None:
    repo = _copy(pristine, tmp_path)
    dead = _dead_pid()
    staging = repo / f".staging-{dead}-abc123"
    shutil.copytree(repo / GEO, staging / GEO)  # what an export before the manifest left on SIGKILL
    _refused(repo, capsys, f"{staging}:", "interrupted export", "remove it or re-run export")
    assert exporter(repo).version == 2
    assert not staging.exists() and verify_repository(repo) == {m: [1, 2] for m in MODELS}


def test_staging_folder_of_a_running_export_is_left_alone(
    pristine: Path, tmp_path: Path, capsys, tiny_run: Path
) -> None:
    repo = _copy(pristine, tmp_path)
    live = subprocess.Popen(["sleep", "60"])
    try:
        (repo / f".staging-{live.pid}-abc123").mkdir()
        before = _snapshot(repo)
        code, err = _cli(["export", str(tiny_run), "--out", str(repo), "--threshold", "0.5"], capsys)
        assert code == ModelError.exit_code and f"process {live.pid}" in err, err
        assert (repo / f".staging-{live.pid}-abc123").is_dir() and _snapshot(repo) == before
    finally:
        live.kill()
        live.wait()


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ---- 7. the demo and the Docker path verify what they serve ------------------------------------------------
def test_demo_verifies_the_repository_before_serving(pristine: Path, tmp_path: Path, capsys) -> None:
    from gliodeploy.demo import verify_before_serving

    repo = _copy(pristine, tmp_path)
    assert verify_before_serving(repo) == {m: [1] for m in MODELS}
    assert f"$ gliodeploy verify {repo}" in capsys.readouterr().out
    _extra_model(repo)
    with pytest.raises(ModelError, match="gliodeploy_extra"):
        verify_before_serving(repo)


DOCKER = Path(__file__).resolve().parents[1] / "docker"


def test_compose_verifies_before_triton_starts() -> None:
    import yaml

    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    verify, triton = services["verify"], services["triton"]
    assert verify["command"] == ["gliodeploy", "verify", "/models"]
    assert triton["depends_on"]["verify"]["condition"] == "service_completed_successfully"
    assert verify["volumes"] == ["../model_repository:/models:ro"] == triton["volumes"][:1]  # the same bytes
    # TensorRT engines survive restarts: a named volume on the gpu profile's cache path.
    from gliodeploy.export.profiles import ExportProfile

    cache = ExportProfile.from_toml(DOCKER.parent / "export" / "gpu.toml").tensorrt_cache_path
    assert f"trt-cache:{cache}" in triton["volumes"] and cache in (DOCKER / "Dockerfile.triton").read_text()
    start = triton["healthcheck"]["start_period"]
    assert start.endswith("s") and int(start[:-1]) >= 600  # READY waits for the warmup's engine build
    assert verify["image"] == triton["image"] and verify.get("restart") == "no"
    assert "--model-repository=/models" in triton["command"]
    dockerfile = (DOCKER / "Dockerfile.triton").read_text()
    assert "[client]" in dockerfile  # tritonclient's ModelConfig protobuf, which verify parses configs with
    assert "RUN gliodeploy verify /models" in dockerfile
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD"))
    assert cmd.index("gliodeploy verify /models &&") < cmd.index("exec tritonserver")
    assert "service_completed_successfully" in (DOCKER / "README.md").read_text()
