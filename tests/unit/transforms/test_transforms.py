"""Intensity scaling, slice resizing and DMPLS augmentation transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scribmed.data.errors import DataError
from scribmed.transforms import (
    DMPLSAugmentd,
    RandRot90Flip,
    RandRot90Flipd,
    RandRotateSmall,
    RandRotateSmalld,
    ResizeSliced,
    ScaleIntensityPercentile,
    ScaleIntensityPercentiled,
    resize_back,
    resize_slices,
    rotate_slices,
)

IGNORE = 4
LEVELS = np.array([0.0, 0.3, 0.6, 0.9], dtype=np.float32)  # label k <-> intensity LEVELS[k]


def _label_of(image: np.ndarray) -> np.ndarray:
    """The label a pixel must have given its (exact) level intensity."""
    return np.abs(image[..., None] - LEVELS).argmin(-1)


def _sample(seed: int = 0, h: int = 48, w: int = 64, block: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, (h // block, w // block))
    label = np.kron(coarse, np.ones((block, block), dtype=np.int64))[None].astype(np.uint8)
    image = LEVELS[label].astype(np.float32)
    scribble = np.where(rng.random(label.shape) < 0.2, label, IGNORE).astype(np.uint16)
    return {"image": image, "label": label, "scribble": scribble, "inside": np.ones_like(label)}


KEYS = ["image", "label", "scribble", "inside"]


def _uniform_3x3(lab: np.ndarray) -> np.ndarray:
    """Pixels whose 8 neighbours share their label (False on the border)."""
    out = np.zeros(lab.shape, dtype=bool)
    c = lab[1:-1, 1:-1]
    ok = np.ones(c.shape, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ok &= lab[1 + dy : lab.shape[0] - 1 + dy, 1 + dx : lab.shape[1] - 1 + dx] == c
    out[1:-1, 1:-1] = ok
    return out


def _check_dtypes(out: dict, ref: dict) -> None:
    for k in KEYS:
        assert isinstance(out[k], np.ndarray) and out[k].dtype == ref[k].dtype, k


# ---------------------------------------------------------------- rot90 + flip


def test_rot90_flip_keeps_alignment_and_is_a_dihedral_map() -> None:
    data = _sample(1)
    t = RandRot90Flipd(KEYS)
    dihedral = [np.flip(np.rot90(data["label"], k, (-2, -1)), ax) for k in range(4) for ax in (-2, -1)]
    for seed in range(25):
        out = t.set_random_state(seed)(data)
        _check_dtypes(out, data)
        assert np.array_equal(out["label"], _label_of(out["image"]))
        assert any(np.array_equal(out["label"], d) for d in dihedral)
        assert np.array_equal(out["scribble"] != IGNORE, np.isin(out["scribble"], [0, 1, 2, 3]))
        assert out["label"].flags["C_CONTIGUOUS"]


def test_rot90_flip_torch_and_determinism() -> None:
    img = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(2, 6, 6)
    a = RandRot90Flip().set_random_state(7)
    b = RandRot90Flip().set_random_state(7)
    outs = [a(img) for _ in range(10)]
    assert all(torch.equal(o, b(img)) for o in outs)
    assert all(isinstance(o, torch.Tensor) and o.dtype == img.dtype for o in outs)
    assert len({tuple(o.flatten().tolist()) for o in outs}) > 2
    assert torch.equal(RandRot90Flip(prob=0.0)(img), img)


# ---------------------------------------------------------------- small rotation


def test_rotation_nearest_keeps_exact_alignment() -> None:
    data = _sample(2)
    t = RandRotateSmalld(
        KEYS, label_keys=["label", "inside"], scribble_keys="scribble", ignore_index=IGNORE, image_mode="nearest"
    )
    for seed in range(20):
        out = t.set_random_state(seed)(data)
        _check_dtypes(out, data)
        assert abs(t.angle) <= 20.0
        assert np.array_equal(out["label"], _label_of(out["image"]))
        outside = out["inside"] == 0
        # label maps padded with 0, scribbles with the ignore value (never a fake background scribble)
        assert np.all(out["label"][outside] == 0)
        assert np.all(out["scribble"][outside] == IGNORE)
        if abs(t.angle) > 2:
            assert outside.any()
        labelled = out["scribble"] != IGNORE
        assert np.array_equal(out["scribble"][labelled], out["label"][labelled])


def test_rotation_bilinear_image_agrees_with_nearest_labels_inside_blocks() -> None:
    data = _sample(3)
    t = RandRotateSmalld(KEYS, label_keys=["label", "inside"], scribble_keys="scribble", ignore_index=IGNORE)
    for seed in range(20):
        out = t.set_random_state(seed)(data)
        img, lab = out["image"][0], out["label"][0]
        assert set(np.unique(lab)) <= set(np.unique(data["label"]))
        assert set(np.unique(out["scribble"])) <= set(np.unique(data["scribble"]))
        assert img.min() >= 0.0 and img.max() <= 0.9 + 1e-6
        on_level = np.isclose(img[..., None], LEVELS, atol=1e-5).any(-1)
        # away from block edges (uniform 3x3 label neighbourhood) a bilinear sample mixes one block
        inner = on_level & _uniform_3x3(lab) & (out["inside"][0] == 1)
        assert inner.mean() > 0.4
        assert np.array_equal(lab[inner], _label_of(img)[inner])


def test_rotate_slices_matches_scipy_convention_and_zero_angle_is_identity() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(4)
    lab = np.kron(rng.integers(1, 5, (6, 9)), np.ones((7, 7), dtype=np.int64))  # 42 x 63, no zeros
    for angle in (-17.0, 9.5, 33.3):
        ref = ndimage.rotate(lab, angle, order=0, reshape=False, mode="constant", cval=0)
        ours = rotate_slices(lab[None], angle, mode="nearest")[0]
        # same pixels, same direction; scipy only pads a thin extra rim (it treats the last
        # half pixel at the far edges as outside), so compare where both sampled the input
        both = (ref != 0) & (ours != 0)
        assert both.mean() > 0.7 and np.array_equal(ours[both], ref[both])
        assert ((ours == 0) & (ref != 0)).sum() == 0
    img = rng.random((1, 20, 30)).astype(np.float32)
    np.testing.assert_allclose(rotate_slices(img, 0.0), img, atol=1e-5)  # float32 grid


def test_rotation_constant_padding_and_torch_inputs() -> None:
    scrib = torch.zeros(1, 32, 32, dtype=torch.int64)  # all background scribble
    out = RandRotateSmall(mode="nearest", padding_mode="constant", cval=IGNORE).set_random_state(0)(scrib)
    assert out.dtype == torch.int64 and out.shape == scrib.shape
    assert set(out.unique().tolist()) == {0, IGNORE}
    edge = rotate_slices(torch.ones(1, 16, 16), 15.0, padding_mode="border")
    torch.testing.assert_close(edge, torch.ones(1, 16, 16))


def test_rotation_determinism_and_kind_validation() -> None:
    data = _sample(5)
    kw = {"label_keys": "label", "scribble_keys": "scribble", "ignore_index": IGNORE}
    a = RandRotateSmalld(KEYS[:3], **kw).set_random_state(11)
    b = RandRotateSmalld(KEYS[:3], **kw).set_random_state(11)
    for _ in range(3):
        oa, ob = a(data), b(data)
        assert all(np.array_equal(oa[k], ob[k]) for k in KEYS[:3])
    with pytest.raises(ValueError, match="ignore_index"):
        RandRotateSmalld(KEYS, scribble_keys="scribble")
    with pytest.raises(ValueError, match="not among keys"):
        RandRotateSmalld(["image"], label_keys="label")
    with pytest.raises(ValueError, match="both"):
        RandRotateSmalld(KEYS, label_keys="label", scribble_keys="label", ignore_index=IGNORE)


# ---------------------------------------------------------------- DMPLS policy


def test_dmpls_augment_policy_frequencies() -> None:
    data = {"image": np.zeros((1, 16, 16), np.float32)}
    t = DMPLSAugmentd(["image"]).set_random_state(0)
    counts = {"rot_flip": 0, "rotate": 0, "none": 0}
    for _ in range(800):
        t(data)
        counts[t.choice] += 1
    assert abs(counts["rot_flip"] / 800 - 0.5) < 0.06
    assert abs(counts["rotate"] / 800 - 0.25) < 0.06
    assert abs(counts["none"] / 800 - 0.25) < 0.06
    even = DMPLSAugmentd(["image"], rotate_prob=1.0).set_random_state(0)
    choices = []
    for _ in range(200):
        even(data)
        choices.append(even.choice)
    assert "none" not in choices and 60 < choices.count("rotate") < 140


def test_dmpls_augment_alignment_determinism_and_padding() -> None:
    data = _sample(6)
    kw = {"label_keys": ["label", "inside"], "scribble_keys": "scribble", "ignore_index": IGNORE}
    t = DMPLSAugmentd(KEYS, image_mode="nearest", **kw)
    seen = set()
    for seed in range(30):
        out = t.set_random_state(seed)(data)
        seen.add(t.choice)
        _check_dtypes(out, data)
        assert np.array_equal(out["label"], _label_of(out["image"]))
        assert np.all(out["scribble"][out["inside"] == 0] == IGNORE)
        again = DMPLSAugmentd(KEYS, image_mode="nearest", **kw).set_random_state(seed)(data)
        assert all(np.array_equal(out[k], again[k]) for k in KEYS)
    assert seen == {"rot_flip", "rotate", "none"}


# ---------------------------------------------------------------- resizing


def test_resize_labels_nearest_and_round_trip() -> None:
    rng = np.random.default_rng(7)
    lab = rng.integers(0, 5, (3, 100, 120)).astype(np.uint8)
    up = resize_slices(lab, (256, 256), mode="nearest")
    assert up.shape == (3, 256, 256) and up.dtype == np.uint8
    assert set(np.unique(up)) <= set(np.unique(lab))
    assert np.array_equal(resize_back(up, (100, 120)), lab)  # exact when the first resize enlarges
    lab_t = torch.from_numpy(lab).long()
    assert torch.equal(resize_back(resize_slices(lab_t, 256, "nearest"), (100, 120)), lab_t)


def test_resize_sliced_alignment_shapes_and_original_size() -> None:
    data = _sample(8, h=72, w=96)
    t = ResizeSliced(KEYS, (256, 256), label_keys=["label", "scribble", "inside"], original_size_key="hw")
    out = t(data)
    _check_dtypes(out, data)
    assert all(out[k].shape == (1, 256, 256) for k in KEYS) and out["hw"] == (72, 96)
    assert set(np.unique(out["scribble"])) <= set(np.unique(data["scribble"]))
    on_level = np.isclose(out["image"][..., None], LEVELS, atol=1e-5).any(-1)
    assert on_level.mean() > 0.6
    assert np.array_equal(out["label"][on_level], _label_of(out["image"])[on_level])
    nearest = ResizeSliced(KEYS, 256, label_keys=["label", "scribble", "inside"], image_mode="nearest")(data)
    assert np.array_equal(nearest["label"], _label_of(nearest["image"]))
    const = resize_slices(np.full((1, 300, 200), 0.5, np.float32), 256)
    np.testing.assert_allclose(const, 0.5, atol=1e-6)
    with pytest.raises(ValueError, match="must match"):
        ResizeSliced(["image", "label"], label_keys="label")(
            {"image": np.zeros((1, 10, 10)), "label": np.zeros((1, 10, 12))}
        )


# ---------------------------------------------------------------- intensity


def test_percentile_scaling_matches_numpy() -> None:
    rng = np.random.default_rng(9)
    vol = (rng.gamma(2.0, 50.0, (4, 32, 32)) * np.array([1, 2, 3, 4])[:, None, None]).astype(np.float32)
    out = np.asarray(ScaleIntensityPercentiled("image")({"image": vol})["image"])
    lo, hi = vol.min(), np.percentile(vol, 99)
    np.testing.assert_allclose(out, (np.clip(vol, lo, hi) - lo) / (hi - lo), atol=1e-5)
    per_slice = np.asarray(ScaleIntensityPercentile(per_slice=True)(vol))
    for s in range(4):
        lo, hi = vol[s].min(), np.percentile(vol[s], 99)
        np.testing.assert_allclose(per_slice[s], (np.clip(vol[s], lo, hi) - lo) / (hi - lo), atol=1e-5)
    bad = vol.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        ScaleIntensityPercentiled("image")({"image": bad})


# ---------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_acdc_volume_through_resize_and_augment(acdc_root) -> None:
    import h5py

    with h5py.File(acdc_root / "ACDC_training_volumes" / "patient001_frame01.h5", "r") as f:
        image, label, scribble = f["image"][:], f["label"][:], f["scribble"][:]
    sl = image.shape[0] // 2
    data = {"image": image[sl][None], "label": label[sl][None], "scribble": scribble[sl][None]}
    pipeline = [
        ResizeSliced(["image", "label", "scribble"], 256, label_keys=["label", "scribble"], original_size_key="hw"),
        DMPLSAugmentd(["image", "label", "scribble"], "label", "scribble", IGNORE, rotate_prob=1.0),
    ]
    for seed in range(4):
        d = data
        pipeline[1].set_random_state(seed)
        for t in pipeline:
            d = t(d)
        assert d["image"].shape == (1, 256, 256) and d["hw"] == image.shape[1:]
        assert set(np.unique(d["scribble"])) <= set(np.unique(scribble)) | {IGNORE}
        assert set(np.unique(d["label"])) <= set(np.unique(label))
        assert d["scribble"].dtype == scribble.dtype and d["label"].dtype == label.dtype
