"""Scribble synthesis: strokes stay inside their class, are thin and sparse, and are seeded."""

from __future__ import annotations

import numpy as np
import pytest

from scribmed.data.case import ABDOMINAL, CARDIAC
from scribmed.data.scribble_synthesis import (
    ScribbleStyle,
    scribble_stats,
    synthesize_scribbles,
)


def _heart_label(n_slices: int = 4, size: int = 96) -> np.ndarray:
    """LV disk, myocardial ring, RV crescent (RV absent in the last slice)."""
    yy, xx = np.mgrid[:size, :size]
    lab = np.zeros((n_slices, size, size), np.uint8)
    for z in range(n_slices):
        r = 14 - 2 * z
        d = np.hypot(yy - 48, xx - 52)
        lab[z][d <= r + 6] = 2
        lab[z][d <= r] = 3
        if z < n_slices - 1:
            rv = (np.hypot(yy - 48, xx - 34) <= r + 8) & (d > r + 6)
            lab[z][rv] = 1
    return lab


def _assert_inside(scrib: np.ndarray, label: np.ndarray, classes) -> None:
    for k in classes:
        assert not np.any((scrib == k) & (label != k)), f"class {k} scribble leaves its region"


def test_strokes_inside_thin_and_sparse():
    lab = _heart_label()
    s = synthesize_scribbles(lab, CARDIAC, seed=0)
    assert s.dtype == np.uint16 and s.shape == lab.shape
    assert set(np.unique(s)) <= {0, 1, 2, 3, 4}
    _assert_inside(s, lab, range(4))
    st = scribble_stats(s, lab, ignore_index=4)
    assert 0.9 < st["unlabeled_fraction"] < 0.995
    for k in (1, 2, 3):
        c = st["classes"][k]
        assert c["slices_with_scribble"] == c["slices_with_class"], f"class {k} scribbled in every slice it appears"
        assert 0.01 < c["fraction_of_region"] < 0.6, f"class {k}: a stroke, not a fill"
        assert c["outside_region"] == 0
    assert st["classes"][0]["slices_with_scribble"] == lab.shape[0]
    assert st["classes"][0]["fraction_of_region"] < 0.1


def test_strokes_are_few_connected_pieces():
    from scipy import ndimage as ndi

    lab = _heart_label()
    s = synthesize_scribbles(lab, CARDIAC, seed=1, style=ScribbleStyle(thicken_prob=0.0))
    for z in range(lab.shape[0]):
        for k in (2, 3):
            n = ndi.label(s[z] == k, structure=np.ones((3, 3)))[1]
            assert n == 1, f"slice {z} class {k}: one stroke, got {n} pieces"
        # 1 px wide without thickening: no 2x2 block fully labelled
        m = s[z] == 2
        assert not np.any(m[:-1, :-1] & m[1:, :-1] & m[:-1, 1:] & m[1:, 1:])


def test_seeded():
    lab = _heart_label()
    a = synthesize_scribbles(lab, CARDIAC, seed=5)
    assert np.array_equal(a, synthesize_scribbles(lab, CARDIAC, seed=5))
    assert not np.array_equal(a, synthesize_scribbles(lab, CARDIAC, seed=6))
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    assert np.array_equal(synthesize_scribbles(lab, CARDIAC, seed=g1), synthesize_scribbles(lab, CARDIAC, seed=g2))


def test_2d_and_defaults_without_class_map():
    lab = _heart_label()[0]
    s = synthesize_scribbles(lab, seed=0)  # ignore = max class + 1 = 4
    assert s.shape == lab.shape and s.dtype == np.uint16
    assert set(np.unique(s)) == {0, 1, 2, 3, 4}
    _assert_inside(s, lab, range(4))


def test_options_classes_background_region():
    lab = _heart_label()
    s = synthesize_scribbles(lab, CARDIAC, seed=0, classes=[3], background=False)
    assert set(np.unique(s)) == {3, 4}
    region = np.zeros(lab.shape, bool)
    region[:, :, 48:] = True
    s = synthesize_scribbles(lab, CARDIAC, seed=0, background_region=region)
    assert not np.any((s == 0) & ~region)
    assert np.any(s == 0)


def test_empty_slices_get_background_only():
    lab = _heart_label(3)
    lab = np.concatenate([np.zeros_like(lab[:1]), lab])
    s = synthesize_scribbles(lab, CARDIAC, seed=0)
    assert set(np.unique(s[0])) == {0, 4}
    s = synthesize_scribbles(np.zeros((2, 40, 40), np.uint8), CARDIAC, seed=0)
    assert set(np.unique(s)) == {0, 4}


def test_abdominal_ignore_value():
    lab = np.zeros((2, 80, 80), np.uint8)
    lab[:, 10:50, 5:40] = 1
    lab[:, 50:70, 50:62] = 3
    s = synthesize_scribbles(lab, ABDOMINAL, seed=0)
    assert set(np.unique(s)) <= {0, 1, 3, 5} and {1, 3, 5} <= set(np.unique(s))
    _assert_inside(s, lab, range(5))


def test_bad_input():
    with pytest.raises(ValueError, match="ignore value 4"):
        synthesize_scribbles(np.full((1, 8, 8), 4), CARDIAC)
    with pytest.raises(ValueError, match="shape"):
        synthesize_scribbles(np.zeros((8,), np.uint8), CARDIAC)
    with pytest.raises(ValueError, match="integer"):
        synthesize_scribbles(np.full((1, 8, 8), 0.5), CARDIAC)
    with pytest.raises(ValueError, match="background_region shape"):
        synthesize_scribbles(_heart_label(), CARDIAC, background_region=np.ones((1, 2, 2), bool))


def test_scribble_stats_by_hand():
    scrib = np.full((1, 4, 5), 4, np.uint16)
    scrib[0, 0, :2] = 3
    scrib[0, 3, 0] = 0
    lab = np.zeros((1, 4, 5), np.uint8)
    lab[0, :2, :2] = 3
    st = scribble_stats(scrib, lab, ignore_index=4, class_names=CARDIAC.names)
    assert st["unlabeled_fraction"] == pytest.approx(17 / 20)
    assert st["classes"][3]["pixels"] == 2 and st["classes"][3]["fraction_of_region"] == pytest.approx(0.5)
    assert st["classes"][0]["fraction_of_region"] == pytest.approx(1 / 16)
    assert st["classes"][1]["pixels"] == 0 and st["classes"][1]["name"] == "RV"
    assert st["classes"][3]["outside_region"] == 0


@pytest.mark.realdata
def test_matches_real_acdc_statistics(acdc_root):
    import h5py

    path = acdc_root / "ACDC_training_volumes" / "patient003_frame01.h5"
    with h5py.File(path, "r") as f:
        label, real = f["label"][:], f["scribble"][:]
    syn = synthesize_scribbles(label, CARDIAC, seed=0)
    _assert_inside(syn, label, range(4))
    a, b = scribble_stats(real, label, 4), scribble_stats(syn, label, 4)
    assert a["unlabeled_fraction"] > 0.98
    assert abs(a["unlabeled_fraction"] - b["unlabeled_fraction"]) < 0.01
    for k in range(4):
        ra, rb = a["classes"][k]["fraction_of_region"], b["classes"][k]["fraction_of_region"]
        assert rb / ra == pytest.approx(1, abs=0.75), f"class {k}: real {ra:.3f} vs synthetic {rb:.3f}"
        assert b["classes"][k]["slices_with_scribble"] >= a["classes"][k]["slices_with_scribble"] - 1


def _arc_by_dilation(curve, fraction, rng):
    """The arc's definition run step by step: geodesic dilation from the start pixel."""
    from scipy import ndimage as ndi

    eight = np.ones((3, 3), bool)
    ys, xs = np.nonzero(curve)
    n = len(ys)
    i = int(rng.integers(n))
    seed = np.zeros_like(curve)
    seed[ys[i], xs[i]] = True
    steps = max(1, int(round(fraction * n / 2)))
    grown = ndi.binary_dilation(seed, structure=eight, iterations=steps, mask=curve)
    while grown.sum() < fraction * n and steps < n:
        more = ndi.binary_dilation(grown, structure=eight, iterations=1, mask=curve)
        if more.sum() == grown.sum():
            break
        grown, steps = more, steps + 1
    return grown


def test_arc_is_the_geodesic_ball_grown_step_by_step():
    from skimage.morphology import skeletonize

    from scribmed.data.scribble_synthesis import _arc

    rng = np.random.default_rng(0)
    for t in range(60):
        h, w = (int(v) for v in rng.integers(6, 40, 2))
        if t % 3 == 0:  # scattered pixels: several components, some unreachable
            curve = rng.random((h, w)) < rng.uniform(0.05, 0.6)
        elif t % 3 == 1:  # skeletons: open lines with branches
            from scipy import ndimage as ndi

            curve = skeletonize(ndi.gaussian_filter(rng.random((h, w)), 2) > 0.5)
        else:  # a ring: growth both ways
            yy, xx = np.ogrid[:h, :w]
            curve = np.abs(np.hypot(yy - h / 2, xx - w / 2) - min(h, w) / 3) < 0.7
        if not curve.any():
            continue
        fraction, seed = float(rng.uniform(0.05, 0.99)), int(rng.integers(1 << 30))
        expected = _arc_by_dilation(curve, fraction, np.random.default_rng(seed))
        np.testing.assert_array_equal(_arc(curve, fraction, np.random.default_rng(seed)), expected)
