"""``gliodeploy preprocess`` end to end: NIfTI in, model-grid NIfTI (+ mask) out, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gliodeploy.cli import app
from gliodeploy.cli_utils import run_app
from gliodeploy.preprocessing import PreprocessConfig


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the real entry point; return (exit code, stderr)."""
    code = 0
    try:
        run_app(app, argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def head_scan(path: Path) -> Path:
    """A small SUV NIfTI: ellipsoid brain (SUV 1.2) with a hot spot, in a 200 mm field of view."""
    index = np.stack(np.meshgrid(*[np.arange(50)] * 3, indexing="ij"), -1)
    d = (index - [26, 24, 25]) * 4.0
    brain = ((d / [60, 75, 50]) ** 2).sum(-1) <= 1
    values = np.where(brain, 1.2, 0.02).astype(np.float32)
    values[np.linalg.norm(d - [20, 0, 0], axis=-1) < 10] = 3.5
    image = sitk.GetImageFromArray(values.transpose(2, 1, 0).copy())
    image.SetSpacing((4.0, 4.0, 4.0))
    sitk.WriteImage(sitk.SmoothingRecursiveGaussian(image, 3.0), str(path))
    return path


def test_preprocess_writes_grid_and_mask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    io = pytest.importorskip("gliodeploy.io")
    if not hasattr(io, "load_pet"):
        pytest.skip("gliodeploy.io.load_pet is not available yet")
    scan = head_scan(tmp_path / "scan.nii.gz")
    out, mask_out = tmp_path / "qc" / "grid.nii.gz", tmp_path / "qc" / "mask.nii.gz"
    argv = ["preprocess", str(scan), "--assume-suv"]
    code, err = run([*argv, "--out", str(out), "--mask-out", str(mask_out), "--preset", "tiny"], capsys)
    assert code == 0, err
    assert "preprocessing" in err and "mL" in err
    grid, mask = sitk.ReadImage(str(out)), sitk.ReadImage(str(mask_out))
    assert grid.GetSize() == (32, 32, 21) and grid.GetSpacing() == (8.0, 8.0, 8.0)
    assert mask.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_allclose(mask.GetOrigin(), grid.GetOrigin())
    values = sitk.GetArrayFromImage(grid)
    assert values.max() > 2.5 and values.min() == 0  # SUV, masked, not normalised
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temporary file left

    # --config takes a run's plans.json; --shape overrides a preset.
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps({"preprocessing": PreprocessConfig.tiny(shape=(30, 30, 20)).to_dict()}))
    code, err = run([*argv, "-o", str(out), "--config", str(plans)], capsys)
    assert code == 0, err
    assert sitk.ReadImage(str(out)).GetSize() == (30, 30, 20)
    code, err = run([*argv, "-o", str(out), "--preset", "tiny", "--shape", "28,28,18"], capsys)
    assert code == 0, err
    assert sitk.ReadImage(str(out)).GetSize() == (28, 28, 18)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--weight", "70", "--assume-suv"], "exclude each other"),
        (["--shape", "12,12"], "three integers"),
        (["--preset", "huge"], "unknown preprocessing preset"),
        (["--interpolation", "cubic"], "interpolation"),
        (["--config", "missing.json"], "no such preprocessing config"),
    ],
)
def test_bad_arguments_give_one_error_line(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "g.nii.gz"
    code, err = run(["preprocess", str(tmp_path / "scan.nii.gz"), "-o", str(out), *extra], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists()
