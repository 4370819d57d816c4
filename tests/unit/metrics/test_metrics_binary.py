"""scribmed.metrics.binary against medpy.metric.binary: same values (≤ 1e-6), same errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import scribmed.metrics.binary as B
from scribmed.metrics import asd, assd, dc, hd, hd95, surface_distances

medpy_binary = pytest.importorskip("medpy.metric.binary")

TOL = 1e-6


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOL


def assert_like_medpy(result, reference, spacing=None, connectivity=1) -> None:
    """dc, hd95 and asd equal medpy's for one pair of masks (both non-empty)."""
    assert dc(result, reference) == medpy_binary.dc(result, reference)
    got = hd95(result, reference, spacing, connectivity)
    want = medpy_binary.hd95(result, reference, spacing, connectivity)
    assert _close(got, want), (got, want)
    got, want = asd(result, reference, spacing, connectivity), medpy_binary.asd(result, reference, spacing, connectivity)
    assert _close(got, want), (got, want)


# --------------------------------------------------------------------------------------------
# real ACDC volumes
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acdc_label(acdc_root) -> np.ndarray:
    h5py = pytest.importorskip("h5py")
    with h5py.File(acdc_root / "ACDC_training_volumes" / "patient001_frame01.h5", "r") as f:
        return np.asarray(f["label"][:])


def _perturb(label: np.ndarray, kind: str) -> np.ndarray:
    inplane = np.zeros((3, 3, 3), bool)
    inplane[1] = ndimage.generate_binary_structure(2, 1)
    if kind == "dilate":
        return ndimage.grey_dilation(label, footprint=inplane)
    if kind == "erode":  # 3D erosion of the whole heart: drops the top and bottom slices' rims
        keep = ndimage.binary_erosion(label > 0, ndimage.generate_binary_structure(3, 1))
        return np.where(keep, label, 0).astype(label.dtype)
    if kind == "shift":
        return np.roll(label, (1, 3), axis=(1, 2))
    if kind == "drop_slice":
        out = label.copy()
        out[label.shape[0] // 2] = 0
        return out
    raise ValueError(kind)


@pytest.mark.realdata
@pytest.mark.parametrize("kind", ["dilate", "erode", "shift", "drop_slice"])
@pytest.mark.parametrize("spacing", [None, 1.25, (10.0, 1.5, 1.5)])
def test_acdc_equals_medpy(acdc_label, kind, spacing):
    pred = _perturb(acdc_label, kind)
    for c in (1, 2, 3):
        assert_like_medpy(pred == c, acdc_label == c, spacing)


@pytest.mark.realdata
@pytest.mark.parametrize("connectivity", [2, 3])
def test_acdc_connectivity(acdc_label, connectivity):
    pred = _perturb(acdc_label, "dilate")
    for c in (1, 3):
        assert_like_medpy(pred == c, acdc_label == c, (10.0, 1.5, 1.5), connectivity)


@pytest.mark.realdata
def test_acdc_removed_class_raises_like_medpy(acdc_label):
    pred = np.where(acdc_label == 2, 0, acdc_label)
    for fn, ref_fn in ((hd95, medpy_binary.hd95), (asd, medpy_binary.asd)):
        with pytest.raises(RuntimeError) as ours:
            fn(pred == 2, acdc_label == 2)
        with pytest.raises(RuntimeError) as theirs:
            ref_fn(pred == 2, acdc_label == 2)
        assert str(ours.value) == str(theirs.value)
    assert dc(pred == 2, acdc_label == 2) == medpy_binary.dc(pred == 2, acdc_label == 2) == 0.0


# --------------------------------------------------------------------------------------------
# synthetic cases
# --------------------------------------------------------------------------------------------


def _blobs(shape, seed, n=3, p=0.55) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random(shape), 2.0)
    return noise > np.quantile(noise, p + 0.1 * rng.random())


@pytest.mark.parametrize("seed", range(6))
def test_random_blobs_3d(seed):
    rng = np.random.default_rng(100 + seed)
    shape = (8, 30, 26)
    a, b = _blobs(shape, seed), _blobs(shape, seed + 50)
    spacing = tuple(rng.uniform(0.3, 5.0, 3))
    assert_like_medpy(a, b, spacing, connectivity=int(rng.integers(1, 4)))


@pytest.mark.parametrize("seed", range(4))
def test_random_blobs_2d(seed):
    a, b = _blobs((40, 33), seed), _blobs((40, 33), seed + 7)
    assert_like_medpy(a, b)
    assert_like_medpy(a, b, (0.7, 2.3), connectivity=2)


def test_objects_touching_the_array_border():
    a = np.zeros((12, 15), bool)
    b = np.zeros((12, 15), bool)
    a[:, :6] = True  # spans the whole first axis and touches the left edge
    b[3:12, 2:15] = True  # touches bottom and right edges
    assert_like_medpy(a, b)
    assert_like_medpy(a, b, (1.0, 3.0), connectivity=2)
    full = np.ones((5, 6, 7), bool)
    part = np.zeros((5, 6, 7), bool)
    part[1:4, 2:5, 0:7] = True
    assert_like_medpy(full, part, (2.0, 1.0, 0.5))
    assert_like_medpy(part, full)


def test_single_voxel_objects_and_far_apart_objects():
    a = np.zeros((9, 20, 20), bool)
    b = np.zeros((9, 20, 20), bool)
    a[4, 10, 10] = True
    b[4, 10, 10] = True
    assert hd95(a, b) == 0.0 == medpy_binary.hd95(a, b)
    b[:] = False
    b[0, 0, 19] = True  # far corner: only the fallback search can find it
    assert_like_medpy(a, b, (3.0, 1.0, 1.0))
    b[8, 19, 0] = True
    assert_like_medpy(a, b, None, connectivity=3)


def test_one_dimensional_and_non_bool_inputs():
    a = np.array([0, 2, 2, 0, 0, 0, 1, 0])
    b = np.array([0, 0, 5, 5, 5, 0, 0, 0], dtype=np.float32)
    assert_like_medpy(a, b)
    assert_like_medpy(a, b, 0.5)


def test_both_search_fallbacks_are_exact(monkeypatch):
    """Far-off border voxels go to the k-d tree (few) or to the EDT (many): both are exact."""
    calls = {"edt": 0, "tree": 0}
    real_edt, real_tree = B.ndimage.distance_transform_edt, B.cKDTree

    def edt(*args, **kw):
        calls["edt"] += 1
        return real_edt(*args, **kw)

    def tree(*args, **kw):
        calls["tree"] += 1
        return real_tree(*args, **kw)

    monkeypatch.setattr(B.ndimage, "distance_transform_edt", edt)
    monkeypatch.setattr(B, "cKDTree", tree)
    # few far voxels in a big, mostly empty box -> k-d tree
    a = np.zeros((30, 30, 30), bool)
    b = np.zeros((30, 30, 30), bool)
    a[2:5, 2:5, 2:5] = True
    b[24:27, 25:28, 22:26] = True
    assert_like_medpy(a, b, (1.0, 2.0, 0.5))
    assert calls["tree"] > 0
    # many voxels far apart in a tight box -> EDT
    a[:] = b[:] = False
    a[0:30, 0:30, 0:14] = True
    b[0:30, 0:30, 20:30] = True
    calls.update(edt=0, tree=0)
    assert_like_medpy(a, b)
    assert calls["edt"] > 0


def test_surface_distances_object_and_extra_metrics():
    a, b = _blobs((10, 20, 20), 1), _blobs((10, 20, 20), 2)
    sd = surface_distances(a, b, (2.0, 1.0, 1.0))
    assert sd.result_to_reference.dtype == np.float64
    assert _close(sd.hd95(), medpy_binary.hd95(a, b, (2.0, 1.0, 1.0)))
    assert _close(hd(a, b, (2.0, 1.0, 1.0)), medpy_binary.hd(a, b, (2.0, 1.0, 1.0)))
    assert _close(assd(a, b, (2.0, 1.0, 1.0)), medpy_binary.assd(a, b, (2.0, 1.0, 1.0)))
    pr, rp = sd.result_to_reference, sd.reference_to_result
    assert sd.hd95_monai() == max(np.percentile(pr, 95), np.percentile(rp, 95))


def test_border_equals_scipy_erosion():
    rng = np.random.default_rng(3)
    m = rng.random((7, 9, 8)) > 0.4
    for conn in (1, 2, 3):
        st = ndimage.generate_binary_structure(3, conn)
        np.testing.assert_array_equal(B.border(m, conn), m ^ ndimage.binary_erosion(m, st))


# --------------------------------------------------------------------------------------------
# errors and edge conventions (as medpy)
# --------------------------------------------------------------------------------------------


def test_empty_inputs_behave_like_medpy():
    empty = np.zeros((4, 5), bool)
    some = np.zeros((4, 5), bool)
    some[1:3, 1:3] = True
    # medpy's code returns 1.0 for two empty masks (its ZeroDivisionError branch); under numpy 2
    # count_nonzero returns a numpy integer, the division gives NaN and the branch never runs.
    # scribmed keeps medpy's intended value, 1.0.
    with np.errstate(invalid="ignore"):
        theirs = medpy_binary.dc(empty, empty)
    assert theirs == 1.0 or np.isnan(theirs)
    assert dc(empty, empty) == 1.0
    assert dc(empty, some) == medpy_binary.dc(empty, some) == 0.0
    for fn, ref_fn in ((hd95, medpy_binary.hd95), (asd, medpy_binary.asd)):
        for x, y in ((empty, some), (some, empty), (empty, empty)):
            with pytest.raises(RuntimeError) as ours:
                fn(x, y)
            with pytest.raises(RuntimeError) as theirs:
                ref_fn(x, y)
            assert str(ours.value) == str(theirs.value)


def test_spacing_of_wrong_length_raises_like_medpy():
    a = np.zeros((4, 5), bool)
    a[1, 1] = True
    with pytest.raises(RuntimeError):
        medpy_binary.hd95(a, a, (1.0, 2.0, 3.0))
    with pytest.raises(RuntimeError):
        hd95(a, a, (1.0, 2.0, 3.0))


def test_invalid_inputs_raise_value_error():
    a = np.zeros((4, 5), bool)
    a[1, 1] = True
    with pytest.raises(ValueError, match="same shape"):
        hd95(a, a[:3])
    with pytest.raises(ValueError, match="positive"):
        hd95(a, a, (0.0, 1.0))
    with pytest.raises(ValueError, match="connectivity"):
        hd95(a, a, connectivity=0)


def test_percentile_is_numpys_bit_for_bit():
    rng = np.random.default_rng(0)
    for i in range(3000):
        n = int(rng.integers(1, 300))
        values = (rng.random(n) * 50, np.sqrt(rng.integers(0, 40, n).astype(float)),
                  rng.integers(0, 4, n) * 1.5625)[i % 3]
        for q in (95.0, 50.0, 99.9, 0.0, 100.0):
            assert B.percentile(values.copy(), q) == float(np.percentile(values, q)), (n, q)


def test_zero_padded_equals_np_pad():
    a = np.random.default_rng(1).random((3, 4, 5)) > 0.5
    assert np.array_equal(B.zero_padded(a, (1, 0, 2)), np.pad(a, [(1, 1), (0, 0), (2, 2)]))


def test_nonzero_box_equals_find_objects():
    rng = np.random.default_rng(2)
    for shape in ((6, 20, 17), (30, 11), (40,), (3, 5, 4, 6)):
        for dtype in (bool, np.int16):
            a = np.zeros(shape, dtype)
            inner = tuple(slice(int(rng.integers(0, n // 2)), int(rng.integers(n // 2 + 1, n + 1))) for n in shape)
            a[inner] = (rng.integers(-1, 2, a[inner].shape) if dtype is np.int16 else rng.random(a[inner].shape) > 0.7)
            found = ndimage.find_objects((a != 0).view(np.uint8) if a.dtype == bool else (a != 0).astype(np.uint8))
            assert B.nonzero_box(a) == (found[0] if found else None), (shape, dtype)
    assert B.nonzero_box(np.zeros((4, 5), bool)) is None
