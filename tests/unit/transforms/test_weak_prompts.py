"""Prompts from boxes, points and full masks, and the supervision dispatcher (ScribblePromptsd's format)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import DecodeSpy, EMBED_DIM, fake_backend  # noqa: E402
from monai.transforms import Compose

from scribmed.data.case import CARDIAC
from scribmed.data.weak_labels import PointSet, WeakLabel
from scribmed.sam.pseudo_labels import PromptConfig, decode_prompt_dict
from scribmed.transforms import (
    PAD_LABEL,
    BoxPromptsd,
    MaskPromptsd,
    PointPromptsd,
    ScribblePromptsd,
    WeakPromptsd,
    box_prompts,
    empty_prompts,
    from_input_frame,
    mask_box,
    mask_prompts,
    merge_class_rows,
    point_prompts,
)

H, W = 100, 200  # non-square: SAM's longest side 256 -> scale 1.28, image 128 x 256 in the frame
KEYS = {"classes", "point_coords", "point_labels", "boxes", "negative_sources", "original_size", "input_size"}
IGNORE = CARDIAC.ignore_index


def box_label() -> WeakLabel:
    weak = WeakLabel("box", (3, H, W), case_id="c1")
    weak.boxes[1] = {3: [(120, 30, 160, 70)], 1: [(10, 20, 50, 60), (60, 5, 70, 15)]}
    return weak


def point_label() -> WeakLabel:
    weak = WeakLabel("point", (3, H, W), case_id="c2")
    weak.points[2] = {1: PointSet([(30, 40), (35, 45)], [(150, 50)]), 3: PointSet([(140, 50)]),
                      2: PointSet([], [(5, 5)])}  # class 2: negatives only -> not prompted
    return weak


def full_label() -> np.ndarray:
    lab = np.zeros((H, W), np.uint8)
    lab[20:60, 10:50] = 1
    lab[30:80, 120:170] = 3
    return lab


def scribble_slice() -> np.ndarray:
    s = np.full((H, W), IGNORE, np.uint8)
    s[40, 15:45] = 1
    s[55, 125:165] = 3
    s[90, 5:190] = 0
    return s


# ------------------------------------------------------------------------------ boxes


def test_box_prompt_lands_in_sams_frame_for_a_non_square_slice():
    p = box_prompts({1: [(10, 20, 50, 60)]}, (H, W), input_size=256)
    assert set(p) == KEYS and p["classes"] == [1] and p["original_size"] == (H, W)
    np.testing.assert_allclose(p["boxes"], [[12.8, 25.6, 64.0, 76.8]], rtol=1e-6)
    np.testing.assert_allclose(p["boxes"], fake_backend().to_input_boxes(np.array([[10, 20, 50, 60]]), (H, W)),
                               rtol=1e-6)
    assert p["point_coords"].shape == (1, 0, 2) and p["point_coords"].dtype == np.float32
    assert p["point_labels"].shape == (1, 0) and p["point_labels"].dtype == np.int32
    # the far corner of the image maps to the frame's image extent (256 wide, 128 high)
    corner = box_prompts({2: [(0, 0, W - 1, H - 1)]}, (H, W), input_size=256)["boxes"][0]
    np.testing.assert_allclose(corner, [0, 0, (W - 1) * 1.28, (H - 1) * 1.28], rtol=1e-6)


def test_several_boxes_of_a_class_give_rows_tagged_by_class():
    weak = box_label()
    p = box_prompts(weak.boxes[1], (H, W), classes=(1, 2, 3), margin=12, regions=True)
    assert p["classes"] == [1, 1, 3] and p["negative_sources"] == [None] * 3
    # margin grows each side, clipped to the image; regions are the weak boxes themselves
    np.testing.assert_array_equal(p["boxes"], [[0, 8, 62, 72], [48, 0, 82, 27], [108, 18, 172, 82]])
    assert p["regions"].shape == (3, H, W) and p["regions"].dtype == bool
    np.testing.assert_array_equal(p["regions"][0], weak.box_mask(1, 1) & ~_box(60, 5, 70, 15))
    np.testing.assert_array_equal(p["regions"][2], weak.box_mask(1, 3))
    assert box_prompts(weak.boxes[1], (H, W), classes=(3,))["classes"] == [3]
    assert box_prompts(weak.boxes[1], (H, W))["classes"] == [1, 1, 3]  # default: ascending
    empty = box_prompts({}, (H, W))
    assert empty["classes"] == [] and empty["boxes"].shape == (0, 4) and empty["point_coords"].shape == (0, 0, 2)


def _box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0 : y1 + 1, x0 : x1 + 1] = True
    return m


def test_merge_class_rows_is_the_max_union():
    logits = np.stack([np.full((4, 5), -1.0), np.full((4, 5), -1.0), np.full((4, 5), 2.0)])
    logits[0, 0, 0] = 3.0
    logits[1, 3, 4] = 1.0
    merged = merge_class_rows(logits, [1, 1, 3])
    assert list(merged) == [1, 3]
    assert merged[1][0, 0] == 3.0 and merged[1][3, 4] == 1.0 and (merged[1] > 0).sum() == 2
    t = merge_class_rows(torch.from_numpy(logits), [1, 1, 3])
    np.testing.assert_array_equal(t[1].numpy(), merged[1])
    with pytest.raises(ValueError, match="classes"):
        merge_class_rows(logits, [1, 3])


# ------------------------------------------------------------------------------ points


def test_point_labels_padding_and_frame():
    weak = point_label()
    p = point_prompts(weak.points[2], (H, W), input_size=256, regions=True)
    assert set(p) == KEYS | {"regions"} and p["boxes"] is None
    assert p["classes"] == [1, 3]  # class 2 has only negatives
    np.testing.assert_array_equal(p["point_labels"], [[1, 1, 0], [1, PAD_LABEL, PAD_LABEL]])
    np.testing.assert_allclose(p["point_coords"][0], np.array([(30, 40), (35, 45), (150, 50)]) * 1.28, rtol=1e-6)
    np.testing.assert_allclose(p["point_coords"][1, 0], [140 * 1.28, 50 * 1.28], rtol=1e-6)
    np.testing.assert_array_equal(p["point_coords"][1, 1:], 0.0)  # padding stays at (0, 0)
    back = from_input_frame(p["point_coords"][0], (H, W), 256)
    np.testing.assert_allclose(back, [(30, 40), (35, 45), (150, 50)], atol=1e-4)
    assert p["regions"][0].sum() == 2 and p["regions"][0][40, 30] and p["regions"][0][45, 35]
    assert not p["regions"][0][50, 150]  # negatives are not the region
    no_neg = point_prompts(weak.points[2], (H, W), classes=(3, 1), negatives=False)
    assert no_neg["classes"] == [3, 1]
    np.testing.assert_array_equal(no_neg["point_labels"], [[1, PAD_LABEL], [1, 1]])
    np.testing.assert_array_equal(no_neg["point_coords"][1], [(30, 40), (35, 45)])  # pixels without input_size
    plain = point_prompts({2: [(7, 8)]}, (H, W))  # plain positive lists are accepted
    assert plain["classes"] == [2] and plain["point_labels"].tolist() == [[1]]


# ------------------------------------------------------------------------------ full masks


def test_mask_prompts_box_plus_deterministic_points():
    lab = full_label()
    p = mask_prompts(lab, n_points=5, box_margin=2, input_size=256, regions=True)
    assert set(p) == KEYS | {"regions"} and p["classes"] == [1, 3]
    assert p["point_coords"].shape == (2, 5, 2) and (p["point_labels"] == 1).all()
    np.testing.assert_allclose(p["boxes"][0], np.array(mask_box(lab == 1, 2)) * 1.28, rtol=1e-6)
    for i, k in enumerate(p["classes"]):
        xy = np.rint(from_input_frame(p["point_coords"][i], (H, W), 256)).astype(int)
        assert (lab[xy[:, 1], xy[:, 0]] == k).all()  # on the class mask (its skeleton)
        np.testing.assert_array_equal(p["regions"][i], lab == k)
    again = mask_prompts(lab, n_points=5, box_margin=2, input_size=256)
    np.testing.assert_array_equal(again["point_coords"], p["point_coords"])
    assert mask_prompts(lab, classes=(3, 2))["classes"] == [3]


# ------------------------------------------------------------------------------ dictionary transforms


def test_each_transform_alone_in_compose():
    weak_box, weak_pt = box_label(), point_label()
    d = Compose([BoxPromptsd(keys="weak", class_map=CARDIAC, input_size=256)])({"weak": weak_box, "slice": 1})
    assert d["prompts"]["classes"] == [1, 1, 3] and d["prompts"]["boxes"].shape == (3, 4)
    d = Compose([PointPromptsd(keys="weak", class_map=CARDIAC, output_key="pp")])({"weak": weak_pt, "slice": 2})
    assert d["pp"]["classes"] == [1, 3] and d["pp"]["point_labels"].shape == (2, 3)
    d = Compose([MaskPromptsd(keys="label", class_map=CARDIAC, n_points=3)])({"label": full_label()[None]})
    assert d["prompts"]["classes"] == [1, 3] and d["prompts"]["point_coords"].shape == (2, 3, 2)
    d = Compose([WeakPromptsd(class_map=CARDIAC, input_size=256)])(
        {"supervision": "box", "weak": weak_box, "slice": 1, "image": np.zeros((H, W), np.float32)})
    assert d["prompts"]["classes"] == [1, 1, 3]
    # a slice with no entry gives no rows; a one-slice label needs no slice key
    assert BoxPromptsd()({"weak": weak_box, "slice": 0})["prompts"]["classes"] == []
    single = WeakLabel("box", (1, H, W), boxes={0: {2: [(1, 2, 3, 4)]}})
    assert BoxPromptsd()({"weak": single})["prompts"]["classes"] == [2]
    with pytest.raises(KeyError, match="slice"):
        BoxPromptsd()({"weak": weak_box})
    with pytest.raises(ValueError, match="expected a box weak label"):
        BoxPromptsd()({"weak": weak_pt, "slice": 2})


def test_dispatcher_delegates_scribbles_identically():
    s = scribble_slice()
    opts = dict(n_points=5, negatives="background", boxes=True, box_margin=3)
    ref = ScribblePromptsd(keys="scribble", class_map=CARDIAC, input_size=256, **opts)({"scribble": s})["prompts"]
    t = WeakPromptsd(class_map=CARDIAC, input_size=256, scribble_options=opts)
    got = t({"supervision": "scribble", "scribble": s})["prompts"]
    assert set(got) == set(ref) == KEYS
    for key in KEYS:
        if isinstance(ref[key], np.ndarray):
            np.testing.assert_array_equal(got[key], ref[key])
        else:
            assert got[key] == ref[key]
    # a given prompter (e.g. PromptConfig.prompter) is the one called
    prompter = PromptConfig(n_points=4).prompter(CARDIAC, 256)
    calls = []
    original = prompter.prompts
    prompter.prompts = lambda x: calls.append(1) or original(x)  # type: ignore[method-assign]
    out = WeakPromptsd(class_map=CARDIAC, input_size=256, scribble_prompter=prompter, regions=True)(
        {"supervision": "scribble", "scribble": s[None]})["prompts"]
    assert calls == [1] and out["classes"] == [1, 3] and out["point_coords"].shape == (2, 4, 2)
    np.testing.assert_array_equal(out["regions"], np.stack([s == 1, s == 3]))
    with pytest.raises(ValueError, match="input_size"):
        WeakPromptsd(class_map=CARDIAC, input_size=1024, scribble_prompter=prompter)


def test_dispatcher_other_types_match_their_transforms():
    t = WeakPromptsd(class_map=CARDIAC, input_size=256, box_margin=4, n_points=6)
    base = {"weak": box_label(), "slice": 1, "label": full_label(), "scribble": scribble_slice()}
    box = t({**base, "supervision": "box"})["prompts"]
    ref = BoxPromptsd(class_map=CARDIAC, margin=4, input_size=256)(base)["prompts"]
    np.testing.assert_array_equal(box["boxes"], ref["boxes"])
    full = t({**base, "supervision": "full"})["prompts"]
    ref = mask_prompts(full_label(), CARDIAC.foreground, 6, 4, input_size=256)
    np.testing.assert_array_equal(full["point_coords"], ref["point_coords"])
    np.testing.assert_array_equal(full["boxes"], ref["boxes"])
    pts = t({"supervision": "point", "weak": point_label(), "slice": 2})["prompts"]
    assert pts["classes"] == [1, 3] and pts["boxes"] is None
    none = t({**base, "supervision": "none"})["prompts"]
    assert none["classes"] == [] and none["original_size"] == (H, W)
    assert set(none) == set(empty_prompts((H, W))) == KEYS
    fixed = WeakPromptsd(class_map=CARDIAC, supervision="full")(base)  # no supervision key needed
    assert fixed["prompts"]["classes"] == [1, 3]
    with pytest.raises(ValueError, match="unknown supervision"):
        t({**base, "supervision": "tags"})
    with pytest.raises(KeyError, match="supervision"):
        t(base)
    assert "prompts" not in WeakPromptsd(class_map=CARDIAC, allow_missing_keys=True)(base)


# ------------------------------------------------------------------------------ decoding


@pytest.fixture(scope="module")
def backend():
    return fake_backend()


@pytest.fixture()
def spy(backend):
    spy = DecodeSpy(backend)
    yield spy
    backend.decode = spy.original  # the backend is shared by the module's tests


@torch.no_grad()
def test_box_rows_decode_in_one_batched_call(backend, spy):
    emb = torch.randn(1, EMBED_DIM, 64, 64)
    t = WeakPromptsd(class_map=CARDIAC, input_size=backend.input_size)
    p_box = t({"supervision": "box", "weak": box_label(), "slice": 1})["prompts"]
    logits = decode_prompt_dict(backend, emb, p_box)
    assert len(spy.calls) == 1 and spy.calls[0]["coords"].shape == (3, 0, 2)  # 3 box rows, one call
    assert spy.calls[0]["boxes"].shape == (3, 4) and logits.shape == (3, H, W)
    low, _ = spy.original(emb, None, None, torch.from_numpy(p_box["boxes"]))  # SAM's "no points"
    direct = backend.postprocess(low, (H, W))[:, 0]
    np.testing.assert_allclose(logits.numpy(), direct.numpy(), atol=1e-5)  # P = 0 == no points
    merged = merge_class_rows(logits, p_box["classes"])
    assert sorted(merged) == [1, 3] and merged[1].shape == (H, W)
    assert decode_prompt_dict(backend, emb, empty_prompts((H, W))).shape == (0, H, W)
    assert len(spy.calls) == 1  # no rows, no decoder call


@torch.no_grad()
def test_full_mask_rows_send_boxes_and_points_together(backend, spy):
    emb = torch.randn(1, EMBED_DIM, 64, 64)
    t = WeakPromptsd(class_map=CARDIAC, input_size=backend.input_size, n_points=4)
    p_full = t({"supervision": "full", "label": full_label()})["prompts"]
    out = decode_prompt_dict(backend, emb, p_full, multimask=True)
    call = spy.calls[-1]
    assert len(spy.calls) == 1 and call["multimask"]
    assert call["coords"].shape == (2, 4, 2) and call["boxes"].shape == (2, 4)
    assert out.shape == (2, H, W) and torch.isfinite(out).all()
