"""Scribble → SAM prompt transforms: point placement, negatives, boxes, input frame, SeSAM points."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from scribmed.data.case import ABDOMINAL, CARDIAC
from scribmed.data.sesam_sampling import instance_points
from scribmed.transforms.prompt_boxes import mask_box, scribble_box
from scribmed.transforms.prompt_frame import (
    boxes_from_input_frame,
    boxes_to_input_frame,
    from_input_frame,
    input_frame_shape,
    to_input_frame,
)
from scribmed.transforms.prompt_packing import PAD_LABEL
from scribmed.transforms.prompt_points import CARDIAC_NEGATIVE_PRIORITY, negative_points, scribble_points
from scribmed.transforms.prompts import ScribblePromptsd
from scribmed.transforms.sesam_points import SeSAMPointsd

IGNORE = CARDIAC.ignore_index  # 4


def _on(points: np.ndarray, region: np.ndarray) -> bool:
    xy = points.astype(int)
    return bool(np.all(np.isclose(points, xy)) and region[xy[:, 1], xy[:, 0]].all())


def _near(points: np.ndarray, mask: np.ndarray, px: int = 1) -> bool:
    """Every point on ``mask`` or within its ``px``-pixel (8-connected) dilation."""
    return _on(points, ndi.binary_dilation(mask, np.ones((3, 3), bool), iterations=px))


def _blank(h: int = 128, w: int = 160) -> np.ndarray:
    return np.full((h, w), IGNORE, dtype=np.uint8)


def _gaps(points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(points, axis=0), axis=1)


# ------------------------------------------------------------------ positives


def test_straight_stroke_even_spacing_and_count():
    s = _blank()
    s[60, 20:141] = 3  # 121 px horizontal stroke
    pts = scribble_points(s, 3, n=10, ignore_index=IGNORE)
    assert pts.shape == (10, 2) and pts.dtype == np.float32
    assert _near(pts, s == 3)
    xs = np.sort(pts[:, 0])
    gaps = np.diff(xs)
    assert gaps.min() > 0.8 * gaps.mean() and gaps.max() < 1.2 * gaps.mean()
    assert 10 <= gaps.mean() <= 13  # ~ length / n, the stroke is covered end to end
    assert xs[0] < 35 and xs[-1] > 125


def test_curved_stroke_even_spacing_along_curve():
    s = _blank(200, 200)
    t = np.linspace(0.0, 1.5 * np.pi, 2000)  # three quarters of a circle, r = 60
    s[np.round(100 + 60 * np.sin(t)).astype(int), np.round(100 + 60 * np.cos(t)).astype(int)] = 2
    pts = scribble_points(s, 2, n=12, ignore_index=IGNORE)
    assert pts.shape == (12, 2) and _near(pts, s == 2)
    angles = np.unwrap(np.arctan2(pts[:, 1] - 100, pts[:, 0] - 100))
    order = np.argsort(angles if angles[-1] > angles[0] else -angles)
    steps = np.diff(angles[order])
    # consecutive points are equally far apart *along the arc* (a raster order would not be)
    assert np.allclose(steps, steps.mean(), rtol=0.25)
    assert abs(abs(steps.sum()) - 1.5 * np.pi * 11 / 12) < 0.3
    # the points come out in walk order: neighbours in the output are neighbours on the arc
    assert _gaps(pts).max() < 1.3 * _gaps(pts).min()


def test_closed_ring_and_two_strokes_share_points_by_length():
    s = _blank(200, 200)
    t = np.linspace(0.0, 2 * np.pi, 3000)
    s[np.round(100 + 50 * np.sin(t)).astype(int), np.round(100 + 50 * np.cos(t)).astype(int)] = 2
    ring = scribble_points(s, 2, n=10, ignore_index=IGNORE)
    assert ring.shape == (10, 2) and _near(ring, s == 2)
    ang = np.sort(np.arctan2(ring[:, 1] - 100, ring[:, 0] - 100))
    steps = np.diff(np.concatenate([ang, ang[:1] + 2 * np.pi]))
    assert steps.max() < 1.5 * steps.min()  # even around the whole loop

    s = _blank()
    s[20, 10:130] = 1  # 120 px
    s[100, 10:50] = 1  # 40 px
    pts = scribble_points(s, 1, n=8, ignore_index=IGNORE)
    assert pts.shape == (8, 2) and _near(pts, s == 1)
    assert (pts[:, 1] == 20).sum() == 6 and (pts[:, 1] == 100).sum() == 2


def test_counts_small_and_empty():
    s = _blank()
    s[10, 10:16] = 1  # 6 px < n
    pts = scribble_points(s, 1, n=10)
    assert pts.shape == (6, 2) and _on(pts, s == 1) and len(np.unique(pts, axis=0)) == 6
    s[50:54, 50:54] = 3  # 16-px blob: skeleton shorter than n → fall back to its pixels
    pts = scribble_points(s, 3, n=10)
    assert pts.shape == (10, 2) and _on(pts, s == 3) and len(np.unique(pts, axis=0)) == 10
    assert scribble_points(s, 2, n=10).shape == (0, 2)
    assert scribble_points(s, 1, n=0).shape == (0, 2)


def test_pixels_mode_on_scribble_and_spread():
    s = _blank()
    s[30:32, 10:110] = 1  # 2-px wide stroke
    pts = scribble_points(s, 1, n=5, mode="pixels")
    assert pts.shape == (5, 2) and _on(pts, s == 1)
    xs = np.sort(pts[:, 0])
    assert xs[0] == 10 and xs[-1] == 109 and np.diff(xs).min() > 15


def test_dilation_never_enters_other_scribbles():
    s = _blank()
    s[40, 10:100] = 1
    s[41, 10:100] = 2  # touching Myo stroke right below
    s[39, 10:100] = 0  # and background above
    pts = scribble_points(s, 1, n=10, dilate=2, ignore_index=IGNORE)
    assert len(pts) == 10 and _near(pts, s == 1, px=2)
    assert not _on(pts, (s != 1) & (s != IGNORE)) and (pts[:, 1] >= 39).all() and (pts[:, 1] <= 40).all()


def test_input_validation():
    with pytest.raises(ValueError, match="mode"):
        scribble_points(_blank(), 1, mode="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2D slice"):
        scribble_points(np.zeros((2, 8, 8)), 1)
    with pytest.raises(ValueError, match="class_map or classes"):
        ScribblePromptsd()


# ------------------------------------------------------------------ negatives


def _cardiac_slice() -> np.ndarray:
    s = _blank()
    s[20, 10:60] = 1  # RV
    s[60, 10:60] = 2  # Myo
    s[100, 10:60] = 3  # LV
    s[120, 10:150] = 0  # background scribble
    return s


def test_negatives_follow_priority_then_background_never_unlabeled():
    s = _cardiac_slice()
    for k, expected in ((1, 2), (3, 2), (2, 1)):
        pts, src = negative_points(s, k, CARDIAC_NEGATIVE_PRIORITY, n=10, ignore_index=IGNORE)
        assert src == expected and pts.shape == (10, 2) and _near(pts, s == expected)
    s[s == 2] = IGNORE  # no Myo: RV and LV fall back to the background scribble
    pts, src = negative_points(s, 1, CARDIAC_NEGATIVE_PRIORITY, n=10, ignore_index=IGNORE)
    assert src == 0 and _near(pts, s == 0) and not _on(pts, s == IGNORE)
    s[s == 0] = IGNORE  # no background scribble either: nothing (not the unlabeled value)
    pts, src = negative_points(s, 3, CARDIAC_NEGATIVE_PRIORITY, n=10, ignore_index=IGNORE)
    assert src is None and pts.shape == (0, 2)
    pts, src = negative_points(_cardiac_slice(), 1, {}, n=10, use_background=False)
    assert src is None and pts.shape == (0, 2)


# ------------------------------------------------------------------ boxes and frames


def test_boxes():
    m = np.zeros((50, 40), bool)
    m[10:21, 5:9] = True
    assert mask_box(m) == (5, 10, 8, 20)
    assert mask_box(m, margin=6) == (0, 4, 14, 26)
    assert mask_box(np.zeros((5, 5), bool)) is None
    s = _cardiac_slice()
    assert scribble_box(s, 2) == (10, 60, 59, 60)
    assert scribble_box(s[None], 2, margin=200) == (0, 0, 159, 127)
    assert scribble_box(s, 4 + 1) is None


def test_input_frame_round_trip():
    hw = (256, 216)
    assert input_frame_shape(hw, 1024) == (1024, 864)
    assert input_frame_shape((100, 37), 256) == (256, 95)  # SAM rounds the short side
    pts = np.array([[0.0, 0.0], [215.0, 255.0], [10.5, 3.25]])
    inp = to_input_frame(pts, hw, 1024)
    np.testing.assert_allclose(inp, pts * 4, rtol=1e-6)
    round_trip = from_input_frame(to_input_frame(pts, (100, 37), 256), (100, 37), 256)
    np.testing.assert_allclose(round_trip, pts, atol=1e-4)
    np.testing.assert_allclose(to_input_frame(pts, hw, (128, 108)), pts / 2, rtol=1e-6)
    boxes = np.array([[[1.0, 2.0, 30.0, 40.0]]])
    np.testing.assert_allclose(boxes_to_input_frame(boxes, hw, 1024), boxes * 4)
    box_trip = boxes_from_input_frame(boxes_to_input_frame(boxes, (100, 37), 256), (100, 37), 256)
    np.testing.assert_allclose(box_trip, boxes, atol=1e-4)


# ------------------------------------------------------------------ dictionary transform


def test_scribble_promptsd_shapes_padding_and_frame():
    s = _cardiac_slice()
    s[100, 10:60] = IGNORE
    s[100, 10:16] = 3  # LV: only 6 pixels
    d = {"scribble": torch.as_tensor(s[None].astype(np.int64)), "image": "kept"}
    out = ScribblePromptsd(class_map=CARDIAC, n_points=10, boxes=True, input_size=320)(d)
    assert out["image"] == "kept"
    p = out["prompts"]
    assert p["classes"] == [1, 2, 3] and p["negative_sources"] == [2, 1, 2]
    assert p["point_coords"].shape == (3, 20, 2) and p["point_coords"].dtype == np.float32
    assert p["point_labels"].shape == (3, 20)
    assert (p["point_labels"][0] == [1] * 10 + [0] * 10).all()
    assert (p["point_labels"][2] == [1] * 6 + [0] * 10 + [PAD_LABEL] * 4).all()
    assert (p["point_coords"][2, 16:] == 0).all()
    assert p["boxes"].shape == (3, 4) and p["original_size"] == (128, 160)
    # input frame: scale 320 / 160 = 2; points map back onto their scribbles
    back = from_input_frame(p["point_coords"][0, :10], (128, 160), 320)
    assert _near(back, s == 1)
    np.testing.assert_allclose(p["boxes"][1], np.array(scribble_box(s, 2)) * 2)

    none = ScribblePromptsd(classes=[1, 2, 3], ignore_index=IGNORE, negatives="none")({"scribble": s})["prompts"]
    assert none["point_labels"].shape == (3, 10) and none["boxes"] is None
    assert (none["point_labels"][2] == [1] * 6 + [PAD_LABEL] * 4).all()
    bg = ScribblePromptsd(class_map=CARDIAC, negatives="background")({"scribble": s})["prompts"]
    assert bg["negative_sources"] == [0, 0, 0]


def test_scribble_promptsd_omits_absent_classes_and_empty_slice():
    s = _cardiac_slice()
    s[s == 2] = IGNORE  # no Myo on this slice: the other classes are still prompted
    p = ScribblePromptsd(class_map=CARDIAC)({"scribble": s})["prompts"]
    assert p["classes"] == [1, 3] and p["negative_sources"] == [0, 0]
    empty = ScribblePromptsd(class_map=ABDOMINAL)({"scribble": np.full((20, 20), 5)})["prompts"]
    assert empty["classes"] == [] and empty["point_coords"].shape == (0, 0, 2)


def test_acdc_slice_ten_points_per_class_on_scribble(acdc_root):
    import h5py

    with h5py.File(acdc_root / "ACDC_training_volumes" / "patient001_frame01.h5", "r") as f:
        scribble = f["scribble"][:]
    checked = 0
    for z in (2, 5, 8):
        s = scribble[z]
        p = ScribblePromptsd(class_map=CARDIAC)({"scribble": s})["prompts"]
        present = [k for k in CARDIAC.foreground if (s == k).any()]
        assert p["classes"] == present and present
        for row, k in enumerate(p["classes"]):
            labels = p["point_labels"][row]
            pos = p["point_coords"][row][labels == 1]
            assert len(pos) == 10 and len(np.unique(pos, axis=0)) == 10
            assert _near(pos, s == k) and not _on(pos, (s != k) & (s != IGNORE))
            neg = p["point_coords"][row][labels == 0]
            src = p["negative_sources"][row]
            assert src in (0, 1, 2) and src != k and _near(neg, s == src)
            checked += 1
    assert checked >= 6


# ------------------------------------------------------------------ SeSAM points


def test_instance_points_grid_rule():
    m = np.zeros((80, 80), bool)
    m[5:35, 5:35] = True  # instance 1: 900 px
    m[50:75, 40:78] = True  # instance 2
    m[79, 0] = True  # instance 3: a single pixel
    pts, inst = instance_points(m, k=5, rng=np.random.RandomState(0))
    assert pts.shape == (11, 2) and inst.tolist() == [1] * 5 + [2] * 5 + [3]
    assert _on(pts, m) and len(np.unique(pts, axis=0)) == 11
    # one point per grid cell of side sqrt(900 / 5) ≈ 13.4 inside instance 1
    cells = {(int((y - 5) // np.sqrt(180)), int((x - 5) // np.sqrt(180))) for x, y in pts[:5]}
    assert len(cells) == 5
    # within a cell, points favour the interior (probability ∝ distance transform); with k = 1
    # the whole square is one cell, so the mean depth approaches sum(d^2) / sum(d)
    sq = m[:40, :40]
    rs = np.random.RandomState(0)
    one = np.concatenate([instance_points(sq, 1, rs)[0] for _ in range(150)]).astype(int)
    depth = ndi.distance_transform_edt(np.pad(sq, 1))[1:-1, 1:-1]
    d = depth[sq]
    assert depth[one[:, 1], one[:, 0]].mean() > 0.5 * (d.mean() + (d**2).sum() / d.sum())
    assert instance_points(np.zeros((9, 9), bool), rng=0)[0].shape == (0, 2)


def test_sesam_pointsd_determinism_and_output():
    label = np.zeros((1, 64, 64), np.uint8)
    label[0, 5:25, 5:25] = 1
    label[0, 40:60, 5:25] = 1  # second instance of class 1
    label[0, 30:60, 35:60] = 2
    label[0, 0:2, 62:64] = 9  # ignore value: not a class
    t = SeSAMPointsd(keys="label", k=5, ignore_index=9, input_size=128)
    a = t.set_random_state(seed=3)({"label": label})["sesam_prompts"]
    b = t.set_random_state(seed=3)({"label": label})["sesam_prompts"]
    c = t.set_random_state(seed=4)({"label": label})["sesam_prompts"]
    assert a["classes"] == [1, 1, 2] and a["instances"] == [1, 2, 1]
    assert a["point_coords"].shape == (3, 5, 2) and (a["point_labels"] == 1).all()
    np.testing.assert_array_equal(a["point_coords"], b["point_coords"])
    assert not np.array_equal(a["point_coords"], c["point_coords"])
    back = from_input_frame(a["point_coords"].reshape(-1, 2), (64, 64), 128)
    assert _on(back[:10], label[0] == 1) and _on(back[10:], label[0] == 2)


def test_docs_example_runs():
    text = (Path(__file__).resolve().parents[3] / "docs" / "prompts.md").read_text()
    scope: dict = {}
    exec(compile(re.findall(r"```python\n(.*?)```", text, re.S)[0], "docs/prompts.md", "exec"), scope)
    assert scope["prompts"]["classes"] == [1, 2, 3] and scope["prompts"]["negative_sources"] == [2, 1, 2]
    assert scope["confidence"].shape == (4, 128, 128)
    assert np.unique(scope["label"]).tolist() == [0, 1, 2, 3]
