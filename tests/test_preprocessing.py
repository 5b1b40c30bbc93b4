"""Geometry preprocessing on synthetic FDOPA-like phantoms: mask, centring, orientation, inverse mapping."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from gliodeploy.errors import ConfigError, InputError
from gliodeploy.preprocessing import PreprocessConfig, normalize, preprocess, to_grid_image, to_native

BRAIN_CENTRE = np.array([30.0, -20.0, 40.0])  # mm, LPS; the field of view is centred elsewhere
SEMI_AXES = np.array([65.0, 80.0, 55.0])  # mm
AIR, BRAIN, STRIATUM, SCALP, FACE_NECK = range(5)
UPTAKE = np.array([0.0, 1.2, 4.0, 2.2, 1.4], np.float32)  # SUV: low brain, hot striatum, hot scalp


def regions(points: np.ndarray) -> np.ndarray:
    """Tissue label at physical points ``[..., 3]`` (mm, LPS)."""
    d = points - BRAIN_CENTRE
    radius = lambda semi: np.sqrt(((d / semi) ** 2).sum(-1))  # noqa: E731
    label = np.full(points.shape[:-1], AIR, np.uint8)
    label[(radius(SEMI_AXES + 12) <= 1) & (radius(SEMI_AXES + 8) > 1)] = SCALP  # 4 mm shell, 8 mm skull gap
    label[radius(SEMI_AXES) <= 1] = BRAIN
    for side in (-24.0, 24.0):
        label[np.linalg.norm(d - [side, -10.0, 5.0], axis=-1) <= 11] = STRIATUM
    face = np.sqrt((((d - [0, -95, -70]) / [45, 22, 30]) ** 2).sum(-1)) <= 1
    neck = (np.hypot(d[..., 0], d[..., 1] - 10) <= 40) & (d[..., 2] < -80)
    label[(face | neck) & (label == AIR)] = FACE_NECK
    return label


def rotation_z(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def phantom(direction: np.ndarray, size=(100, 104, 70), spacing=(3.0, 2.8, 3.5), seed: int = 0) -> sitk.Image:
    """A head in a 300 x 290 x 245 mm field of view, blurred like a PET reconstruction, with noise."""
    size_a, spacing_a = np.asarray(size), np.asarray(spacing)
    origin = np.array([0.0, 10.0, 0.0]) - direction @ ((size_a - 1) / 2 * spacing_a)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1)
    label = regions(origin + (index * spacing_a) @ direction.T)
    values = UPTAKE[label] + np.random.default_rng(seed).normal(0, 0.05, label.shape).astype(np.float32)
    image = sitk.GetImageFromArray(values.transpose(2, 1, 0).astype(np.float32))
    image.SetSpacing(spacing_a.tolist())
    image.SetOrigin(origin.tolist())
    image.SetDirection(direction.ravel().tolist())
    return sitk.SmoothingRecursiveGaussian(image, 2.0)


def reindexed(image: sitk.Image, flip: tuple[bool, bool, bool], order: tuple[int, int, int]) -> sitk.Image:
    """The same physical image stored with flipped and permuted index axes."""
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    size, spacing = np.asarray(image.GetSize()), np.asarray(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    first = np.where(flip, size - 1, 0)
    origin = image.TransformIndexToPhysicalPoint([int(i) for i in first])
    columns = direction * np.where(flip, -1.0, 1.0)
    array = array[tuple(slice(None, None, -1) if f else slice(None) for f in flip)].transpose(order)
    out = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    out.SetOrigin(origin)
    out.SetSpacing(spacing[list(order)].tolist())
    out.SetDirection(columns[:, list(order)].ravel().tolist())
    return out


def grid_points(grid: sitk.Image) -> np.ndarray:
    """Physical centre of every voxel of an identity-direction grid, ``[x, y, z, 3]``."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in grid.GetSize()], indexing="ij"), -1)
    return np.asarray(grid.GetOrigin()) + index * np.asarray(grid.GetSpacing())


OBLIQUE = rotation_z(15) @ np.diag([1.0, -1.0, 1.0])  # rotated and y-flipped direction cosines
DEMO = PreprocessConfig.demo()


@pytest.fixture(scope="module")
def native() -> sitk.Image:
    return phantom(OBLIQUE)


@pytest.fixture(scope="module")
def result(native: sitk.Image):
    return preprocess(native, DEMO)


def test_output_grid_shape_dtype_and_geometry(result) -> None:
    assert result.array.shape == DEMO.shape and result.array.dtype == np.float32
    assert result.mask.shape == DEMO.shape and result.mask.dtype == np.uint8
    assert result.array.flags.c_contiguous
    assert result.grid.GetSize() == DEMO.shape
    assert result.grid.GetSpacing() == DEMO.spacing
    assert result.grid.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.grid).transpose(2, 1, 0), result.array)
    assert set(result.timings) >= {"mask", "resample", "total"}


def test_masked_suv_values(result) -> None:
    assert result.array.min() >= 0
    assert np.all(result.array[result.mask == 0] == 0)
    inside = result.array[result.mask == 1]
    assert np.median(inside) == pytest.approx(UPTAKE[BRAIN], rel=0.1)  # SUV kept, not normalised
    assert inside.max() > 3.0  # the striatum survives
    for mode in ("minmax", "suv_clip"):
        y = normalize(result.array, PreprocessConfig.demo(normalization=mode))
        assert y.min() >= 0 and y.max() <= 1


def test_mask_keeps_brain_and_drops_scalp_face_and_neck(result) -> None:
    label = regions(grid_points(result.grid))
    mask = result.mask.astype(bool)
    assert mask[(label == BRAIN) | (label == STRIATUM)].mean() > 0.95  # edges are blurred
    assert mask[label == SCALP].mean() < 0.02
    assert not mask[label == FACE_NECK].any()
    assert mask[label == AIR].mean() < 0.01
    expected_ml = 4 / 3 * np.pi * SEMI_AXES.prod() / 1000
    assert result.brain_volume_ml == pytest.approx(expected_ml, rel=0.1)


def test_brain_is_centred(result) -> None:
    centre_of_mass = np.argwhere(result.mask).mean(axis=0)
    grid_centre = (np.asarray(DEMO.shape) - 1) / 2
    assert np.all(np.abs(centre_of_mass - grid_centre) <= 1.0)
    np.testing.assert_allclose(result.brain_centre_mm, BRAIN_CENTRE, atol=2.0)
    assert result.brain_cut == 0.0


def test_flipped_and_permuted_storage_gives_the_same_result(native: sitk.Image, result) -> None:
    for flip, order in (((True, False, False), (0, 1, 2)), ((False, True, True), (1, 0, 2))):
        other = preprocess(reindexed(native, flip, order), DEMO)
        np.testing.assert_array_equal(other.mask, result.mask)
        np.testing.assert_allclose(other.array, result.array, atol=1e-5)
        np.testing.assert_allclose(other.grid.GetOrigin(), result.grid.GetOrigin(), atol=1e-6)


@pytest.mark.parametrize("cfg", [PreprocessConfig.tiny(), PreprocessConfig.demo(interpolation="bspline")])
def test_other_grids_and_interpolation(native: sitk.Image, cfg: PreprocessConfig) -> None:
    out = preprocess(native, cfg)
    assert out.array.shape == cfg.shape and out.array.min() >= 0
    centre_of_mass = np.argwhere(out.mask).mean(axis=0)
    assert np.all(np.abs(centre_of_mass - (np.asarray(cfg.shape) - 1) / 2) <= 1.0)


def test_ibsi_grid_alignment_on_an_axis_aligned_scan() -> None:
    """Model grid voxels sit on the lattice of the scan's own centred 4 mm grid (whole-voxel shift)."""
    image = phantom(np.eye(3), size=(80, 80, 66), spacing=(4.0, 4.0, 4.0))  # covers the model grid
    out = preprocess(image, DEMO)
    # Same spacing, both grids centred on lattice points -> origins differ by whole voxels.
    shift = (np.asarray(out.grid.GetOrigin()) - np.asarray(image.GetOrigin())) / 4.0
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-6)
    # ... so linear resampling just copies voxels: the values are the scan's own.
    native_values = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    start = np.round(shift).astype(int)
    inside = out.mask == 1
    window = native_values[tuple(slice(s, s + n) for s, n in zip(start, DEMO.shape, strict=True))]
    np.testing.assert_allclose(out.array[inside], np.maximum(window[inside], 0), atol=1e-5)


def test_to_native_round_trip(native: sitk.Image, result) -> None:
    blob_index = (40, 30, 22)
    blob_mm = np.asarray(result.grid.TransformIndexToPhysicalPoint(blob_index))
    points = grid_points(result.grid)
    heat = np.exp(-(np.linalg.norm(points - blob_mm, axis=-1) ** 2) / (2 * 8.0**2)).astype(np.float32)
    back = to_native(heat, result.grid, native)
    assert back.GetSize() == native.GetSize()
    assert back.GetSpacing() == native.GetSpacing()
    assert back.GetOrigin() == native.GetOrigin()
    assert back.GetDirection() == native.GetDirection()
    values = sitk.GetArrayFromImage(back).transpose(2, 1, 0)
    peak = np.unravel_index(np.argmax(values), values.shape)
    peak_mm = np.asarray(native.TransformIndexToPhysicalPoint([int(i) for i in peak]))
    assert np.linalg.norm(peak_mm - blob_mm) <= np.linalg.norm(native.GetSpacing()) / 2 + 1e-6
    # The value there is the Gaussian at that physical point (up to trilinear interpolation error).
    expected = np.exp(-(np.linalg.norm(peak_mm - blob_mm) ** 2) / (2 * 8.0**2))
    assert values.max() == pytest.approx(expected, abs=0.08)
    # Every native voxel holds the grid map evaluated at that voxel's physical point.
    grid_map = to_grid_image(heat, result.grid)
    for index in np.random.default_rng(1).integers(0, native.GetSize(), size=(20, 3)):
        point = native.TransformIndexToPhysicalPoint([int(i) for i in index])
        inside = grid_map.TransformPhysicalPointToContinuousIndex(point)
        if all(0 <= c <= n - 1 for c, n in zip(inside, DEMO.shape, strict=True)):
            want = grid_map.EvaluateAtPhysicalPoint(point, sitk.sitkLinear)
        else:
            want = 0.0
        assert values[tuple(index)] == pytest.approx(want, abs=1e-5)
    # A label map keeps its integer type with nearest-neighbour interpolation.
    labels = to_native(result.mask, result.grid, native, "nearest")
    assert labels.GetPixelID() == sitk.sitkUInt8
    brain_native = sitk.GetArrayFromImage(labels).sum() * np.prod(native.GetSpacing()) / 1000
    assert brain_native == pytest.approx(result.brain_volume_ml, rel=0.05)


def test_to_grid_image_checks_the_shape(result) -> None:
    image = to_grid_image(result.mask, result.grid)
    assert image.GetOrigin() == result.grid.GetOrigin()
    with pytest.raises(InputError, match=r"shape \(3, 3, 3\)"):
        to_grid_image(np.zeros((3, 3, 3)), result.grid)


def _image(array_zyx: np.ndarray) -> sitk.Image:
    return sitk.GetImageFromArray(array_zyx.astype(np.float32))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (_image(np.full((20, 20, 20), np.nan)), "NaN or Inf"),
        (_image(np.where(np.arange(8000).reshape(20, 20, 20) == 5, np.inf, 1.0)), "1 voxel"),
        (_image(np.zeros((20, 20, 20))), "every voxel is zero"),
        (_image(np.full((20, 20, 20), 2.5)), "constant"),
        (_image(-np.ones((20, 20, 20)) + np.eye(20)[None]), "no positive uptake"),
        (_image(np.ones((20, 20))), "2D"),
        (sitk.Image([8, 8, 8, 3], sitk.sitkFloat32), "4D"),
        (sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 3), "one value per voxel"),
    ],
)
def test_unusable_volumes_raise_input_error(image: sitk.Image, message: str) -> None:
    with pytest.raises(InputError, match=message):
        preprocess(image, PreprocessConfig.tiny())


def test_empty_brain_mask_raises() -> None:
    spikes = np.zeros((40, 40, 40), np.float32)
    spikes[::9, ::9, ::9] = 5.0  # isolated hot voxels: nothing survives the opening
    image = _image(spikes)
    image.SetSpacing((2.0, 2.0, 2.0))
    with pytest.raises(InputError, match="brain mask is empty"):
        preprocess(image, PreprocessConfig.tiny(mask_smoothing_mm=0.0))


def test_brain_larger_than_the_model_grid_raises(native: sitk.Image) -> None:
    small_fov = PreprocessConfig.tiny(shape=(12, 12, 10))  # 96 x 96 x 80 mm
    with pytest.raises(InputError, match=r"would be cut"):
        preprocess(native, small_fov)
    with pytest.warns(UserWarning, match="outside the model grid"):
        out = preprocess(native, PreprocessConfig.tiny(shape=(12, 12, 10), max_brain_cut=1.0))
    assert 0.05 < out.brain_cut < 1


def test_a_few_cut_border_voxels_do_not_warn(native: sitk.Image) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        out = preprocess(native, PreprocessConfig.tiny())
    assert out.brain_cut < 0.01


def test_config_round_trip_validation_and_fingerprint() -> None:
    cfg = PreprocessConfig.demo(normalization="tbr")
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert PreprocessConfig.from_dict(cfg.to_dict()).fingerprint() == cfg.fingerprint()
    assert len(cfg.fingerprint()) == 64
    assert cfg.fingerprint() != PreprocessConfig.demo().fingerprint()
    assert PreprocessConfig(spacing=[2, 2, 2]) == PreprocessConfig.study()  # lists and ints normalised
    assert PreprocessConfig.study().field_of_view_mm == (256.0, 256.0, 164.0)
    assert PreprocessConfig.preset("tiny") == PreprocessConfig.tiny()
    bad = [
        ({"colour": "red"}, "unknown preprocessing config key"),
        ({"spacing": [2, 2]}, "spacing must be 3"),
        ({"shape": [128, 128, 82.5]}, "integers"),
        ({"spacing": [2, 0, 2]}, "> 0 mm"),
        ({"interpolation": "cubic"}, "interpolation"),
        ({"suv_max": -1}, "suv_max"),
        ({"apply_mask": "yes"}, "apply_mask"),
        ({"mask_threshold": 1.5}, "mask_threshold"),
        ({"tbr_robust_factor": 0.9}, "tbr_robust_factor"),
    ]
    for change, message in bad:
        with pytest.raises(ConfigError, match=message):
            PreprocessConfig.from_dict({**cfg.to_dict(), **change})
    with pytest.raises(ConfigError, match="unknown preprocessing preset"):
        PreprocessConfig.preset("huge")


def test_fingerprint_is_stable_across_processes() -> None:
    code = (
        "from gliodeploy.preprocessing import PreprocessConfig; print(PreprocessConfig.study().fingerprint())"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other.strip() == PreprocessConfig.study().fingerprint()


def test_light_side_never_imports_torch() -> None:
    code = (
        "import sys, gliodeploy.preprocessing, gliodeploy.preprocessing.commands;"
        "print(sorted(m for m in ('torch', 'scipy', 'sklearn', 'nilearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_mask_cuts_a_hot_neck_at_the_skull_base() -> None:
    """A neck as hot as the brain and joined to it is cut below the brain, so the head fits the grid."""
    spacing, size = 4.0, np.array([64, 64, 90])  # 360 mm axial field of view, neck down to its bottom
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1)
    points = (index - (size - 1) / 2) * spacing  # LPS mm, centred on 0
    brain = (((points - [0.0, 0.0, 80.0]) / [65.0, 80.0, 60.0]) ** 2).sum(-1) <= 1  # 120 mm tall
    neck = (np.hypot(points[..., 0], points[..., 1] - 10) <= 45) & (points[..., 2] < 40)
    values = np.where(brain | neck, 1.2, 0.0).astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose(2, 1, 0)))
    image.SetSpacing((spacing,) * 3)
    image.SetOrigin(tuple(points[0, 0, 0]))
    image = sitk.SmoothingRecursiveGaussian(image, 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = preprocess(image, PreprocessConfig.tiny())  # default max_brain_cut: raised before the cut
    assert out.brain_cut < 0.05
    mask_z = (grid_points(out.grid)[..., 2])[out.mask.astype(bool)]
    assert mask_z.max() - mask_z.min() <= 170  # 160 mm kept below the vertex (+ mask edge blur)
    brain_on_grid = (((grid_points(out.grid) - [0.0, 0.0, 80.0]) / [65.0, 80.0, 60.0]) ** 2).sum(-1) <= 0.8
    assert out.mask[brain_on_grid].mean() > 0.99  # the brain itself is whole
