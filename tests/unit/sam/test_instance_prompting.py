"""Per-instance SAM prompting: batching, selection rules, the instance map from overlapping masks, S4M refinement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import DecodeSpy, EMBED_DIM, fake_backend  # noqa: E402

from scribmed.sam import (
    masks_to_instances,
    prompt_instances,
    refine_instances,
    sesam_instance_prompts,
)

pytestmark = pytest.mark.usefixtures("one_thread")

HW = (24, 32)


class StubBackend:
    """Decoder stand-in on the original grid (input frame = original pixels).

    Per row: c0 = the whole image (IoU 0.9), c1 = the 5x5 square centred on the row's mean positive
    point (IoU 0.5), c2 = empty (IoU 0.1).
    """

    def __init__(self) -> None:
        self.calls: list[int] = []

    def to_input_coords(self, xy, hw):
        return xy

    def decode(self, embedding, point_coords=None, point_labels=None, boxes=None, mask_inputs=None,
               multimask_output=False):
        assert multimask_output
        k = int(point_coords.shape[0])
        self.calls.append(k)
        out = torch.full((k, 3, *HW), -5.0)
        out[:, 0] = 5.0
        for r in range(k):
            pos = point_coords[r][point_labels[r] == 1].mean(0).round().long()
            x, y = int(pos[0]), int(pos[1])
            out[r, 1, max(y - 2, 0): y + 3, max(x - 2, 0): x + 3] = 5.0
        return out, torch.tensor([[0.9, 0.5, 0.1]]).repeat(k, 1)

    def postprocess(self, low, hw):
        assert tuple(low.shape[-2:]) == tuple(hw)
        return low


def _square(y: int, x: int) -> np.ndarray:
    m = np.zeros(HW, bool)
    m[y - 2: y + 3, x - 2: x + 3] = True
    return m


def test_fake_sam_shapes_batching_and_the_score_rule():
    backend = fake_backend()
    spy = DecodeSpy(backend)
    emb = torch.randn(1, EMBED_DIM, 64, 64)
    coords = torch.tensor([[[4.0, 5.0]], [[20.0, 10.0]], [[30.0, 20.0]], [[10.0, 18.0]], [[16.0, 12.0]]])
    res = prompt_instances(backend, emb, HW, coords, batch_size=2)
    assert [int(c["coords"].shape[0]) for c in spy.calls] == [2, 2, 1] and all(c["multimask"] for c in spy.calls)
    # points reached the decoder in the backend's input frame (256 / 32 = 8x)
    torch.testing.assert_close(spy.calls[0]["coords"], coords[:2] * 8)
    assert res.candidates.shape == (5, 3, *HW) and res.iou.shape == (5, 3) and res.masks.shape == (5, *HW)
    assert res.masks.dtype == bool and res.index.dtype == np.int64 and len(res) == 5
    np.testing.assert_array_equal(res.index, res.iou.argmax(1))  # "score": SAM's highest predicted IoU
    np.testing.assert_array_equal(res.masks, res.candidates[np.arange(5), res.index] > 0)
    np.testing.assert_allclose(res.scores, res.iou.max(1))
    # one call for all rows; lazy mode keeps only the chosen masks, with the same answer
    spy.calls.clear()
    lean = prompt_instances(backend, emb, HW, coords, keep_candidates=False)
    assert len(spy.calls) == 1 and lean.candidates is None
    np.testing.assert_array_equal(lean.masks, res.masks)
    # box corners are mapped like points; points and boxes together
    boxes = np.array([[1, 2, 10, 12], [5, 5, 20, 20]], np.float32)
    spy.calls.clear()
    both = prompt_instances(backend, emb, HW, coords[:2], boxes=boxes, rule="random", seed=0)
    torch.testing.assert_close(spy.calls[0]["boxes"], torch.from_numpy(boxes) * 8)
    assert both.masks.shape == (2, *HW) and both.selection.rule == "random"


def test_sesam_rule_uses_the_regions_and_random_is_seeded():
    stub = StubBackend()
    coords = np.array([[[6.0, 6.0]], [[20.0, 15.0]]], np.float32)
    score = prompt_instances(stub, None, HW, coords)
    np.testing.assert_array_equal(score.index, [0, 0])  # highest IoU: the whole image
    regions = np.stack([_square(6, 6), _square(15, 20)])
    sesam = prompt_instances(stub, None, HW, coords, regions=regions, rule="sesam")
    np.testing.assert_array_equal(sesam.index, [1, 1])  # the square covers and fits its region
    np.testing.assert_array_equal(sesam.masks, regions)
    np.testing.assert_allclose(sesam.selection.coverage[:, 1], 1.0)
    assert sesam.selection.summary()["fallback_rate"] == 0.0
    with pytest.raises(ValueError, match="regions"):
        prompt_instances(stub, None, HW, coords, rule="sesam")
    many = np.repeat(coords, 30, axis=0)
    a = prompt_instances(stub, None, HW, many, rule="random", seed=3, batch_size=7).index
    b = prompt_instances(stub, None, HW, many, rule="random", seed=3, batch_size=7).index
    np.testing.assert_array_equal(a, b)
    assert set(a.tolist()) == {0, 1, 2}
    calls = len(stub.calls)
    empty = prompt_instances(stub, None, HW, np.zeros((0, 1, 2), np.float32))
    assert empty.masks.shape == (0, *HW) and empty.candidates.shape == (0, 3, *HW)
    assert len(stub.calls) == calls  # no rows: no decoder call
    with pytest.raises(ValueError, match="point_coords and/or boxes"):
        prompt_instances(stub, None, HW)
    with pytest.raises(ValueError, match="rows"):
        prompt_instances(stub, None, HW, coords, boxes=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="rule"):
        prompt_instances(stub, None, HW, coords, rule="best")


def test_masks_to_instances_overlaps_by_score_min_size_and_ids():
    masks = np.zeros((3, 10, 10), bool)
    masks[0, 0:6, 0:6] = True  # 36 px, score 0.5
    masks[1, 3:9, 3:9] = True  # 36 px, score 0.9: wins the overlap
    masks[2, 0:2, 8:10] = True  # 4 px, score 0.7: below min_size 5
    inst = masks_to_instances(masks, np.array([0.5, 0.9, 0.7]), min_size=5)
    assert inst.dtype == np.int32 and set(np.unique(inst)) == {0, 1, 2}
    np.testing.assert_array_equal(inst == 1, masks[1])  # best score: id 1, all its pixels
    np.testing.assert_array_equal(inst == 2, masks[0] & ~masks[1])
    kept = masks_to_instances(masks, np.array([0.5, 0.9, 0.7]), ids=[4, 8, 6], min_size=1)
    assert set(np.unique(kept)) == {0, 4, 6, 8} and (kept[masks[1]] == 8).all()
    # overlap resolution can cut an instance into pieces; small pieces are dropped
    cut = np.zeros((2, 10, 10), bool)
    cut[0, 4, :] = True  # a 10 px bar (score 0.2)
    cut[0, 0:3, 0:3] = True  # plus a 9 px block
    cut[1, 0:6, 1:3] = True  # score 0.8 covers part of the bar and of the block
    pieces = masks_to_instances(cut, np.array([0.2, 0.8]), min_size=5)
    assert not (pieces[4, 0] > 0) and (pieces[4, 3:] == 2).all()  # the 1 px piece at x=0 is gone
    assert (pieces[0:3, 0] == 0).all()  # the block's 3 px remainder too
    assert masks_to_instances(np.zeros((0, 4, 4), bool), np.zeros(0)).shape == (4, 4)
    with pytest.raises(ValueError, match="distinct"):
        masks_to_instances(masks, np.ones(3), ids=[1, 1, 2])
    with pytest.raises(ValueError, match="score"):
        masks_to_instances(masks, np.ones(2))


def test_refine_instances_keeps_teacher_ids_and_reports():
    teacher = np.zeros(HW, np.int32)
    teacher[4:9, 4:9] = 3
    teacher[12:19, 18:25] = 5
    prob = np.where(teacher > 0, 0.9, 0.0)
    stub = StubBackend()
    refined, stats = refine_instances(stub, None, HW, teacher, prob, k=3, rule="sesam", rng=0, min_size=1)
    assert refined.dtype == np.int32 and set(np.unique(refined)) == {0, 3, 5}
    assert stats["instances"] == 2 and stats["kept"] == 2 and stats["compatibility"] > 0.5
    assert stats["rows"] == 2 and 0 <= stats["fallback_rate"] <= 1
    for i in (3, 5):  # the refined square sits inside the bounding box of the teacher's instance, grown by 2
        ys, xs = np.nonzero(refined == i)
        ty, tx = np.nonzero(teacher == i)
        assert ys.min() >= ty.min() - 2 and ys.max() <= ty.max() + 2 and xs.min() >= tx.min() - 2
    again, _ = refine_instances(stub, None, HW, teacher, prob, k=3, rule="sesam", rng=0, min_size=1)
    np.testing.assert_array_equal(refined, again)
    score, _ = refine_instances(stub, None, HW, teacher, prob, rule="score", rng=0, keep_ids=False)
    np.testing.assert_array_equal(np.unique(score), [1])  # the whole image wins everywhere; row 2 fully covered
    empty, stats = refine_instances(stub, None, HW, np.zeros(HW, np.int32), prob)
    assert not empty.any() and stats["instances"] == 0
    with pytest.raises(ValueError, match="hw"):
        refine_instances(stub, None, (10, 10), teacher, prob)
    backend = fake_backend()  # real prompt encoder + mask decoder, end to end
    real, stats = refine_instances(backend, torch.randn(1, EMBED_DIM, 64, 64), HW, teacher, prob, rng=1)
    assert real.shape == HW and real.dtype == np.int32 and stats["instances"] == 2
    assert set(np.unique(real)) <= {0, 3, 5}


def test_sesam_instance_prompts_per_region():
    regions = np.zeros((20, 20), np.int32)
    regions[3, 2:18] = 2  # a 16 px stroke
    regions[10:14, 10:14] = 4  # a coarse mask
    regions[15, 2] = regions[17, 6] = 4  # ... and two stray points of the same instance
    regions[18, 18] = 9  # a single point
    regions[0, 0] = -1  # ignored
    coords, labels, ids = sesam_instance_prompts(regions, k=5, rng=0)
    assert coords.shape == (3, 5, 2) and labels.shape == (3, 5) and labels.dtype == np.int64
    np.testing.assert_array_equal(ids, [2, 4, 9])
    for row, i in enumerate(ids):
        valid = labels[row] == 1
        xy = coords[row, valid].astype(int)
        assert (regions[xy[:, 1], xy[:, 0]] == i).all()
        assert len({tuple(p) for p in xy.tolist()}) == len(xy)  # distinct points
    assert labels[0].tolist() == [1] * 5 and labels[1].tolist() == [1] * 5
    assert labels[2].tolist() == [1, -1, -1, -1, -1] and coords[2, 0].tolist() == [18.0, 18.0]
    again = sesam_instance_prompts(regions, k=5, rng=0)
    np.testing.assert_array_equal(again[0], coords)
    c, lab, n = sesam_instance_prompts(np.zeros((5, 5), np.int32))
    assert c.shape == (0, 5, 2) and n.size == 0
    with pytest.raises(ValueError, match="k must"):
        sesam_instance_prompts(regions, k=0)


def test_refine_instances_box_margin_adds_the_teacher_box():
    """``box_margin``: each row also carries its teacher instance's box (grown, inside the image)."""
    from fakes import DecodeSpy

    teacher = np.zeros(HW, np.int32)
    teacher[4:9, 4:9] = 3
    prob = np.where(teacher > 0, 0.9, 0.0)
    backend = fake_backend()
    spy = DecodeSpy(backend)
    refine_instances(backend, torch.randn(1, EMBED_DIM, 64, 64), HW, teacher, prob, rng=1, box_margin=2)
    boxes = spy.calls[-1]["boxes"]
    expected = backend.to_input_coords(torch.tensor([[[2.0, 2.0], [10.0, 10.0]]]), HW).reshape(1, 4)
    torch.testing.assert_close(torch.as_tensor(boxes, dtype=torch.float32), expected.float())
    spy.calls.clear()
    refine_instances(backend, torch.randn(1, EMBED_DIM, 64, 64), HW, teacher, prob, rng=1)
    assert spy.calls[-1]["boxes"] is None and spy.calls[-1]["coords"].shape[1] == 3
