"""Grad-CAM explanations: native-space NIfTI geometry, attention fraction, PNGs, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gliodeploy.cli import app
from gliodeploy.cli_utils import run_app
from gliodeploy.errors import InputError
from gliodeploy.explain.gradcam import attention_inside, gradcam

torch = pytest.importorskip("torch")
N_FOLDS = 2


def make_model_run(root: Path, n_folds: int = N_FOLDS) -> Path:
    """A finished run directory with tiny cnn3d fold models (fixed seeds, untrained weights)."""
    from safetensors.torch import save_file

    from gliodeploy.models import build_model
    from gliodeploy.preprocessing import PreprocessConfig

    cfg = PreprocessConfig.tiny()
    spec = {"name": "cnn3d", "width": 0.0625, "kwargs": {"fc_width": 16}}
    run = root / "run"
    run.mkdir()
    plans = {"experiment": "tiny", "preprocessing": cfg.to_dict(), "model": spec, "folds": n_folds}
    (run / "plans.json").write_text(json.dumps(plans))
    for k in range(n_folds):
        torch.manual_seed(k)
        model = build_model("cnn3d", preprocessing=cfg, width=0.0625, fc_width=16)
        fold = run / f"fold_{k}"
        fold.mkdir()
        save_file({n: t.contiguous() for n, t in model.state_dict().items()}, str(fold / "model.safetensors"))
        (fold / "done.json").write_text("{}")
    return run


def make_scan(path: Path) -> sitk.Image:
    """An SUV phantom with non-trivial geometry: anisotropic spacing, offset origin, flipped axis."""
    shape_zyx = (40, 60, 52)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape_zyx], indexing="ij")
    head = x**2 + y**2 + z**2 <= 0.8
    brain = x**2 + y**2 + z**2 <= 0.6
    arr = np.where(head, 0.4, 0.0) + np.where(brain, 1.0, 0.0)
    arr += np.where((x - 0.3) ** 2 + (y + 0.2) ** 2 + z**2 <= 0.03, 2.0, 0.0)  # hot lesion
    arr = arr.astype(np.float32) + np.random.default_rng(0).normal(0, 0.02, shape_zyx).astype(np.float32)
    img = sitk.GetImageFromArray(np.clip(arr, 0, None))
    img.SetSpacing((3.0, 3.3, 4.0))
    img.SetOrigin((-80.0, 95.0, -70.0))
    img.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(img, str(path))
    return img


@pytest.fixture(scope="module")
def explained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, sitk.Image, Path]:
    root = tmp_path_factory.mktemp("explain")
    run = make_model_run(root)
    native = make_scan(root / "sub-01_pet.nii.gz")
    out = root / "out"
    with pytest.raises(SystemExit) as exc:
        run_app(
            app, ["explain", str(run), str(root / "sub-01_pet.nii.gz"), "--assume-suv", "--out", str(out)]
        )
    assert exc.value.code == 0
    return out, native, run


def test_native_heatmap_has_the_input_geometry(explained: tuple[Path, sitk.Image, Path]) -> None:
    out, native, _ = explained
    maps = list(out.glob("*_gradcam_native.nii.gz"))
    assert len(maps) == 1
    heat = sitk.ReadImage(str(maps[0]))
    assert heat.GetSize() == native.GetSize()
    assert np.allclose(heat.GetSpacing(), native.GetSpacing())
    assert np.allclose(heat.GetOrigin(), native.GetOrigin())
    assert np.allclose(heat.GetDirection(), native.GetDirection())
    values = sitk.GetArrayFromImage(heat)
    assert values.max() > 0 and values.min() >= -1e-6 and values.max() <= 1 + 1e-6


def test_summary_png_and_grid_files(explained: tuple[Path, sitk.Image, Path]) -> None:
    out, _, _ = explained
    summary = json.loads(next(out.glob("*_explanation.json")).read_text())
    assert 0.0 <= summary["attention_inside_brain"] <= 1.0
    assert summary["folds"] == list(range(N_FOLDS))
    assert summary["probability"] == pytest.approx(np.mean(summary["fold_probabilities"]))
    for view in ("axial", "coronal", "sagittal"):
        png = Path(summary["files"][f"png_{view}"])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    grid = sitk.ReadImage(summary["files"]["grid_heatmap"])
    assert grid.GetSize() == (32, 32, 21)
    # the PNGs cut through the map's peak (its maximum), wherever it lies
    from gliodeploy.explain.overlay import read_cut

    cam = sitk.GetArrayFromImage(grid).transpose(2, 1, 0)
    x, y, z = summary["peak_voxel"]
    assert cam[x, y, z] == pytest.approx(cam.max())
    for view in ("axial", "coronal", "sagittal"):
        assert read_cut(Path(summary["files"][f"png_{view}"]).read_bytes())["centre"] == [x, y, z]
    # peak_mm is the peak voxel through the grid's geometry, and the same physical point in the native
    # scan (flipped y axis, anisotropic): the native heatmap is at its maximum there too
    assert grid.TransformIndexToPhysicalPoint([x, y, z]) == pytest.approx(summary["peak_mm"])
    native = sitk.ReadImage(summary["files"]["native_heatmap"])
    index = native.TransformPhysicalPointToIndex(summary["peak_mm"])
    assert summary["peak_voxel_native"] == list(index)
    assert native[index] == pytest.approx(cam.max(), abs=0.05)
    # the default layer of cnn3d is 2x2x1 on the tiny grid: reported as too coarse
    assert summary["layer_feature_shape"] == [2, 2, 1] and "too coarse" in summary["layer_warning"]


def test_single_fold_equals_direct_gradcam(explained: tuple[Path, sitk.Image, Path], tmp_path: Path) -> None:
    from gliodeploy.explain.explainer import explain_scan, load_models

    out, _, run = explained
    result = explain_scan(run, out.parent / "sub-01_pet.nii.gz", tmp_path, fold=1, assume_suv=True)
    assert result.folds == [1]
    grid_suv = sitk.GetArrayFromImage(sitk.ReadImage(result.files["grid_suv"])).transpose(2, 1, 0)
    cam, prob = gradcam(load_models(run, 1)[0][0], grid_suv)
    assert prob == pytest.approx(result.probability, abs=1e-5)
    grid_cam = sitk.GetArrayFromImage(sitk.ReadImage(result.files["grid_heatmap"])).transpose(2, 1, 0)
    assert np.allclose(cam, grid_cam, atol=1e-5)


def test_attention_inside_fraction() -> None:
    cam = np.zeros((4, 4, 4))
    cam[0, 0, 0], cam[3, 3, 3] = 3.0, 1.0
    mask = np.zeros((4, 4, 4), dtype=np.uint8)
    mask[:2, :2, :2] = 1
    assert attention_inside(cam, mask) == pytest.approx(0.75)
    assert attention_inside(np.zeros((4, 4, 4)), mask) == 0.0
    with pytest.raises(InputError, match="shape"):
        attention_inside(cam, mask[:2])


def test_cli_errors_are_clear(explained: tuple[Path, sitk.Image, Path], tmp_path: Path, capsys) -> None:
    out, _, run = explained
    scan = out.parent / "sub-01_pet.nii.gz"
    cases = [
        ([str(tmp_path / "nope"), str(scan), "--assume-suv", "-o", str(tmp_path)], 4, "does not exist"),
        ([str(run), str(scan), "--assume-suv", "--fold", "5", "-o", str(tmp_path)], 2, "out of range"),
        ([str(run), str(scan), "--fold", "0", "--ensemble", "-o", str(tmp_path)], 2, "either --fold"),
    ]
    for args, code, message in cases:
        with pytest.raises(SystemExit) as exc:
            run_app(app, ["explain", *args])
        assert exc.value.code == code
        assert message in capsys.readouterr().err


def _reference_gradcam(model, volume: np.ndarray, layer: str) -> np.ndarray:
    """Grad-CAM by hand with full autograd: ReLU(sum_k mean(dy/dA_k) A_k), min-max, trilinear."""
    import torch.nn.functional as F

    store = {}

    def keep(_m, _i, out):
        out.retain_grad()
        store["a"] = out

    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        model(torch.from_numpy(volume)[None, None]).sum().backward()
    finally:
        handle.remove()
    a = store["a"]
    cam = torch.relu((a.grad.mean(dim=(2, 3, 4), keepdim=True) * a).sum(1, keepdim=True)).detach()
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    return F.interpolate(cam, volume.shape, mode="trilinear", align_corners=False)[0, 0].numpy()


@pytest.mark.parametrize("layer", ["backbone.features.3", "backbone.features.1"])
def test_cam_model_matches_reference_and_is_reusable(
    explained: tuple[Path, sitk.Image, Path], layer: str
) -> None:
    """The truncated backward pass (graph started at the layer) gives the textbook Grad-CAM, and one
    injected model explains several volumes as a fresh one would."""
    from gliodeploy.explain.explainer import load_models
    from gliodeploy.explain.gradcam import CamModel

    out, _, run = explained
    model = load_models(run, 0)[0][0]
    suv = sitk.GetArrayFromImage(sitk.ReadImage(str(next(out.glob("*_suv_grid.nii.gz"))))).transpose(2, 1, 0)
    other = np.ascontiguousarray(np.roll(suv, 3, axis=0))
    cam_model = CamModel(model, layer=layer)
    first, p1 = cam_model(suv)
    second, _ = cam_model(other)
    assert np.allclose(first, _reference_gradcam(model, suv, layer), atol=1e-5)
    assert np.allclose(second, gradcam(model, other, layer=layer)[0], atol=1e-6)
    assert all(p.requires_grad for p in model.parameters())  # the caller's model is untouched
    pp, p2 = gradcam(model, suv, layer=layer, method="gcampp")  # Grad-CAM++ on a single logit
    assert pp.shape == suv.shape and pp.min() >= 0 and pp.max() <= 1 and p2 == pytest.approx(p1, abs=1e-6)
