"""Weak labels per instance (points, boxes, scribbles, coarse masks, tags) and WISH's kind mix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from scribmed.data.errors import DataError
from scribmed.data.instance_weak_labels import BACKGROUND_STROKE, INSTANCE_WEAK_KINDS, InstanceWeakLabel
from scribmed.data.instance_weak_mix import assign_weak_kinds, kind_counts
from scribmed.data.instance_weak_simulation import make_instance_weak
from scribmed.data.phantoms import make_nuclei_image

REPO = Path(__file__).resolve().parents[3]
DSB_ROOT = Path(os.environ.get("SCRIBMED_SHARED_DATA", REPO.parent / "shared" / "data")) / "DSB2018"


@pytest.fixture(scope="module")
def inst() -> np.ndarray:
    _, instance = make_nuclei_image(np.random.default_rng(5), (96, 112), (10, 14))
    return instance


def _ids(inst: np.ndarray) -> list[int]:
    return [int(k) for k in np.unique(inst) if k > 0]


# ------------------------------------------------------------------------------------ kinds


@pytest.mark.parametrize("mode,k", [("center", 1), ("center", 3), ("random", 4)])
def test_points_lie_inside_their_instance(inst: np.ndarray, mode: str, k: int):
    weak = make_instance_weak(inst, "point", seed=1, key="img", points_per_instance=k, point_mode=mode)
    assert weak.kind == "point" and weak.count == len(_ids(inst)) and sorted(weak.points) == _ids(inst)
    for i, pts in weak.points.items():
        area = int((inst == i).sum())
        assert pts.shape == (min(k, area), 2) and pts.dtype == np.int64
        assert np.all(inst[pts[:, 1], pts[:, 0]] == i)  # (x, y) = (column, row)
        assert len({tuple(p) for p in pts.tolist()}) == len(pts)
        if mode == "center":  # the first point is the deepest pixel
            depth = ndi.distance_transform_edt(np.pad(inst == i, 1))[1:-1, 1:-1]
            assert depth[pts[0, 1], pts[0, 0]] == depth.max()
    pm = weak.point_map()
    assert pm.dtype == np.int32 and np.array_equal(weak.regions(), pm)
    assert np.all(pm[pm > 0] == inst[pm > 0]) and np.count_nonzero(pm) == sum(len(p) for p in weak.points.values())


def test_boxes_are_tight_inclusive_and_margins_move_outward(inst: np.ndarray):
    tight = make_instance_weak(inst, "box", key="img")
    h, w = inst.shape
    for i, box in tight.boxes.items():
        rows, cols = np.nonzero(inst == i)
        assert box.tolist() == [cols.min(), rows.min(), cols.max(), rows.max()]
    wide = make_instance_weak(inst, "box", key="img", box_margin=2)
    for i, (x0, y0, x1, y1) in wide.boxes.items():
        t0, s0, t1, s1 = tight.boxes[i].tolist()
        assert (x0, y0, x1, y1) == (max(t0 - 2, 0), max(s0 - 2, 0), min(t1 + 2, w - 1), min(s1 + 2, h - 1))
    jit = make_instance_weak(inst, "box", seed=0, key="img", box_margin=(1, 3))
    for i, box in jit.boxes.items():
        d = np.abs(box - tight.boxes[i])
        assert np.all(d <= 3)
    box_map = tight.box_map()
    assert np.array_equal(tight.regions(), box_map) and np.all(box_map[inst > 0] > 0)


def test_scribbles_stay_inside_their_instance_and_background_strokes_away(inst: np.ndarray):
    weak = make_instance_weak(inst, "scribble", seed=2, key="img")
    mask = weak.mask
    assert mask.dtype == np.int32 and mask.shape == inst.shape and weak.count == len(_ids(inst))
    for i in _ids(inst):
        stroke, own = mask == i, inst == i
        assert stroke.any() and not (stroke & ~own).any()
        assert stroke.sum() <= max(1, 0.3 * own.sum())
    shares = [(mask == i).sum() / (inst == i).sum() for i in _ids(inst)]
    assert 0.02 < np.median(shares) < 0.3
    bg = mask == BACKGROUND_STROKE
    assert bg.sum() >= 5
    assert ndi.distance_transform_edt(inst == 0)[bg].min() > 3.0  # background_margin
    assert set(np.unique(weak.regions())) == {0, *_ids(inst)}  # background strokes are no instance region


def test_coarse_masks_within_three_pixels(inst: np.ndarray):
    weak = make_instance_weak(inst, "coarse", seed=3, key="img")
    mask = weak.mask
    assert set(np.unique(mask)) <= {0, *_ids(inst)}
    grew = shrank = 0
    for i in _ids(inst):
        own, coarse = inst == i, mask == i
        assert ndi.distance_transform_edt(~own)[coarse].max(initial=0) <= 3.0  # at most 3 px outside
        deep = ndi.distance_transform_edt(np.pad(own, 1))[1:-1, 1:-1] > 3.0
        assert not (deep & ~coarse).any()  # at most 3 px eroded
        assert not (coarse & (inst > 0) & ~own).any()  # never into a neighbour
        grew += int((coarse & ~own).any())
        shrank += int((own & ~coarse).any())
    assert grew and shrank
    assert np.array_equal(weak.regions(), mask)


def test_tag_and_full(inst: np.ndarray):
    tag = make_instance_weak(inst, "tag", key="img")
    assert tag.count == len(_ids(inst)) and tag.mask is None and not tag.points and not tag.boxes
    assert tag.to_json().keys() == {"schema", "case_id", "kind", "shape", "count"}
    assert not tag.regions().any()
    full = make_instance_weak(inst[None], "full", key="img")  # (1, H, W) accepted
    assert np.array_equal(full.mask, inst) and full.shape == inst.shape


def test_non_contiguous_ids_keep_their_values():
    lab = np.zeros((12, 12), np.int32)
    lab[1:4, 1:4], lab[6:10, 6:11] = 5, 9
    weak = make_instance_weak(lab, "point", key="x")
    assert weak.count == 2 and sorted(weak.points) == [5, 9]
    with pytest.raises(ValueError, match=">= 0"):
        make_instance_weak(-lab, "point")
    with pytest.raises(ValueError, match=r"\(H, W\) or \(1, H, W\)"):
        make_instance_weak(np.zeros((2, 4, 4), np.int32), "box")
    with pytest.raises(ValueError, match="kind must be one of"):
        make_instance_weak(lab, "polygon")
    with pytest.raises(ValueError, match="point_mode"):
        make_instance_weak(lab, "point", point_mode="edge")


# ------------------------------------------------------------------------------------ seeding, JSON


def test_deterministic_per_seed_and_key(inst: np.ndarray):
    for kind, kw in (("point", {"point_mode": "random", "points_per_instance": 3}), ("scribble", {}),
                     ("coarse", {}), ("box", {"box_margin": (0, 5)})):
        a = make_instance_weak(inst, kind, seed=4, key="img1", **kw)
        assert a == make_instance_weak(inst, kind, seed=4, key="img1", **kw)
        assert a != make_instance_weak(inst, kind, seed=4, key="img2", **kw)
        assert a != make_instance_weak(inst, kind, seed=5, key="img1", **kw)
    centre = make_instance_weak(inst, "point", seed=0, key="a", points_per_instance=2)
    assert centre == InstanceWeakLabel("point", centre.shape, centre.count, centre.points, case_id="a")
    assert centre.points.keys() == make_instance_weak(inst, "point", seed=9, key="b", points_per_instance=2).points.keys()


@pytest.mark.parametrize("kind", INSTANCE_WEAK_KINDS)
def test_json_round_trip_is_exact(inst: np.ndarray, kind: str):
    weak = make_instance_weak(inst, kind, seed=6, key="img", points_per_instance=2)
    doc = json.loads(json.dumps(weak.to_json()))
    back = InstanceWeakLabel.from_json(doc)
    assert back == weak and back.to_json() == doc
    if weak.mask is not None:
        assert back.mask.dtype == np.int32 and len(doc["mask"]["rle"]) < weak.mask.size // 4  # compact


def test_bad_json_names_the_source(inst: np.ndarray):
    doc = make_instance_weak(inst, "point", key="img").to_json()
    src = "weak/img.json"
    cases = [
        ({**doc, "schema": "other"}, "unknown schema"),
        ({**doc, "shape": [4]}, r"\"shape\" must be \[H, W\]"),
        ({**doc, "kind": "polygon"}, "unknown instance weak-label kind 'polygon'"),
        ({**doc, "points": {"1": [[999, 0]]}}, "outside the image"),
        ({**doc, "count": 0}, "count 0"),
        ({**doc, "kind": "box"}, "a box label carries no points"),
        ({**doc, "kind": "scribble", "points": {}}, "needs an"),
        ({**doc, "kind": "full", "points": {}, "mask": {"rle": [0, 3]}}, "run lengths must be positive and sum"),
    ]
    for bad, message in cases:
        with pytest.raises(DataError, match=message) as err:
            InstanceWeakLabel.from_json(bad, source=src)
        assert str(err.value).startswith(f"{src}: ")
    with pytest.raises(DataError, match="box .* is not inside the image"):
        InstanceWeakLabel("box", (10, 10), 1, boxes={1: [3, 3, 2, 5]})


# ------------------------------------------------------------------------------------ the WISH mix


def test_assign_weak_kinds_exact_counts_and_order_independent():
    ids = [f"img{i:02d}" for i in range(10)]
    mix = {"tag": 0.4, "point": 0.3, "box": 0.3}
    got = assign_weak_kinds(ids, mix, seed=0)
    assert sorted(got) == ids
    assert {k: list(got.values()).count(k) for k in mix} == {"tag": 4, "point": 3, "box": 3}
    assert assign_weak_kinds(ids[::-1], dict(reversed(list(mix.items()))), seed=0) == got
    assert assign_weak_kinds(ids, mix, seed=1) != got
    # largest remainder: 7 * (0.5, 0.25, 0.25) = 3.5, 1.75, 1.75 -> 3, 2, 2
    assert kind_counts(7, {"full": 0.5, "point": 0.25, "box": 0.25}) == {"point": 2, "box": 2, "full": 3}
    assert sum(kind_counts(50, {"tag": 1 / 3, "point": 1 / 3, "scribble": 1 / 3}).values()) == 50


@pytest.mark.parametrize("ratios,message", [
    ({"tag": 0.5, "point": 0.4}, "must sum to 1"),
    ({"tag": 1.2, "point": -0.2}, "finite and >= 0"),
    ({"tag": 0.5, "mask": 0.5}, "unknown weak-label kind"),
])
def test_assign_weak_kinds_errors(ratios, message):
    with pytest.raises(ValueError, match=message):
        assign_weak_kinds(["a", "b"], ratios)


def test_assign_weak_kinds_refuses_repeated_ids():
    with pytest.raises(ValueError, match="unique"):
        assign_weak_kinds(["a", "a"], {"tag": 1.0})


# ------------------------------------------------------------------------------------ real data


@pytest.mark.realdata
def test_every_kind_on_a_real_image():
    if not (DSB_ROOT / "stage1_test").is_dir():
        pytest.skip(f"real DSB2018 not found at {DSB_ROOT} (set SCRIBMED_SHARED_DATA)")
    from scribmed.data.layouts import open_dataset

    case = open_dataset("dsb2018", DSB_ROOT)["1ef68e93964c2d9230100c1347c328f6385a7bc027879dc3d4c055e6fe80cb3c"]
    inst = case.instance
    for kind in INSTANCE_WEAK_KINDS:
        weak = make_instance_weak(inst, kind, seed=0, key=case.case_id, points_per_instance=3)
        assert weak.count == int(inst.max()) and weak.shape == inst.shape[1:]
        assert InstanceWeakLabel.from_json(json.loads(json.dumps(weak.to_json()))) == weak
        region = weak.regions()
        if kind in ("point", "scribble", "full"):
            assert np.all(region[region > 0] == inst[0][region > 0])
