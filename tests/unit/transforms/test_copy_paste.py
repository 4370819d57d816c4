"""S4M's ARP copy-paste: pixels and labels follow the pasted instances both ways; draws; types; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from scribmed.transforms import (
    ARPCopyPaste,
    ARPCopyPasted,
    arp_copy_paste,
    arp_draw,
    paste_instances,
)


def _pair() -> tuple[dict, dict]:
    ia = np.zeros((10, 12), np.int32)
    ia[1:4, 1:4] = 1
    ia[6:9, 6:10] = 4
    ib = np.zeros((10, 12), np.int32)
    ib[2:5, 2:5] = 2  # overlaps A's instance 1 partly
    ib[5:10, 5:11] = 3  # covers A's instance 4 fully
    a = {"image": np.full((2, 10, 12), 1.0, np.float32), "instance": ia, "label": (ia > 0).astype(np.uint8),
         "points": np.zeros((10, 12), np.int64)}
    b = {"image": np.full((2, 10, 12), 2.0, np.float32), "instance": ib, "label": (ib > 0).astype(np.uint8) * 2,
         "points": np.full((10, 12), 5, np.int64)}
    return a, b


def test_paste_instances_ids_pixels_and_covered_instances():
    a, b = _pair()
    inst, (img, lab) = paste_instances(a["instance"], b["instance"], [2, 3], [a["image"], a["label"]],
                                       [b["image"], b["label"]])
    mask_b = b["instance"] > 0
    assert inst.dtype == np.int32 and set(np.unique(inst)) == {0, 1, 5, 6}  # new ids above A's max (4)
    np.testing.assert_array_equal(inst == 5, b["instance"] == 2)
    np.testing.assert_array_equal(inst == 6, b["instance"] == 3)  # A's instance 4 fully covered: gone
    np.testing.assert_array_equal(inst == 1, (a["instance"] == 1) & ~mask_b)  # instance 1 loses the overlap
    assert (img[:, mask_b] == 2.0).all() and (img[:, ~mask_b] == 1.0).all() and img.dtype == np.float32
    assert (lab[mask_b] == 2).all() and (lab[~mask_b] == a["label"][~mask_b]).all()
    same, arrays = paste_instances(a["instance"], b["instance"], [], [a["image"]], [b["image"]])
    assert same is a["instance"] and arrays[0] is a["image"]
    with pytest.raises(ValueError, match="dtype"):
        paste_instances(np.full((2, 2), 255, np.uint8), np.ones((2, 2), np.uint8), [1])


def test_both_directions_read_the_original_samples():
    a, b = _pair()
    a2, b2 = arp_copy_paste(a, b, rng=0, prob_instance=1.0, label_keys=("label", "points"))
    # A <- B (all of B's instances); B <- all of A's original instances
    np.testing.assert_array_equal(a2["instance"] > 0, (a["instance"] > 0) & ~(b["instance"] > 0) | (b["instance"] > 0))
    mask_a = a["instance"] > 0
    np.testing.assert_array_equal(b2["instance"][mask_a] > 3, True)  # A's instances get ids above B's max (3)
    assert set(np.unique(b2["instance"][mask_a])) == {4, 5}
    assert (b2["image"][:, mask_a] == 1.0).all() and (b2["points"][mask_a] == 0).all()
    assert (b2["points"][~mask_a] == 5).all() and (a2["points"][b["instance"] > 0] == 5).all()
    assert a2 is not a and a["instance"].max() == 4  # inputs untouched
    none_a, none_b = arp_copy_paste(a, b, rng=0, prob_instance=0.0, label_keys=("label",))
    np.testing.assert_array_equal(none_a["instance"], a["instance"])
    np.testing.assert_array_equal(none_b["image"], b["image"])


def test_draw_probability_limit_and_determinism():
    many = np.arange(1, 201, dtype=np.int32).reshape(10, 20)  # 200 one-pixel instances
    from_b, from_a = arp_draw(many, many, rng=0, prob_instance=0.5)
    assert 70 < from_b.size < 130 and 70 < from_a.size < 130 and not np.array_equal(from_a, from_b)
    assert (np.diff(from_b) > 0).all()
    capped, _ = arp_draw(many, many, rng=0, prob_instance=1.0, max_instances=3)
    assert capped.size == 3
    for x, y in zip(arp_draw(many, many, rng=9), arp_draw(many, many, rng=9)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="prob_instance"):
        arp_draw(many, many, prob_instance=1.5)


def test_torch_in_torch_out_and_shape_errors():
    a, b = _pair()
    ta = {k: torch.from_numpy(v) for k, v in a.items()}
    tb = {k: torch.from_numpy(v) for k, v in b.items()}
    a2, b2 = arp_copy_paste(ta, tb, rng=3, prob_instance=1.0, label_keys=("label",))
    na, nb = arp_copy_paste(a, b, rng=3, prob_instance=1.0, label_keys=("label",))
    for key in ("image", "instance", "label"):
        assert isinstance(a2[key], torch.Tensor) and a2[key].dtype == ta[key].dtype
        np.testing.assert_array_equal(a2[key].numpy(), na[key])
        np.testing.assert_array_equal(b2[key].numpy(), nb[key])
    small = dict(b, instance=b["instance"][:8], image=b["image"][:, :8], label=b["label"][:8])
    with pytest.raises(ValueError, match=r"\(10, 12\).*\(8, 12\)"):
        arp_copy_paste(a, small, rng=0)
    with pytest.raises(ValueError, match="image"):
        arp_copy_paste(a, dict(b, image=b["image"][:1]), rng=0)


def test_array_and_dict_transforms_in_compose():
    a, b = _pair()
    arr = Compose([ARPCopyPaste(prob_instance=0.5)], map_items=False, unpack_items=True).set_random_state(seed=1)
    out = arr((a["image"], a["instance"], b["image"], b["instance"], (a["label"], b["label"])))
    assert len(out) == 5 and out[4][0].shape == (10, 12)
    arr.set_random_state(seed=1)
    again = arr((a["image"], a["instance"], b["image"], b["instance"], (a["label"], b["label"])))
    for x, y in zip(out[:4], again[:4]):
        np.testing.assert_array_equal(x, y)
    data = {"image": a["image"], "instance": a["instance"], "label": a["label"], "image_b": b["image"],
            "instance_b": b["instance"], "label_b": b["label"], "name": "case"}
    dt = Compose([ARPCopyPasted(keys="image", label_keys=("label",), prob_instance=0.5)]).set_random_state(seed=1)
    d = dt(data)
    np.testing.assert_array_equal(d["image"], out[0])  # the dict version makes the same draw
    np.testing.assert_array_equal(d["instance_b"], out[3])
    np.testing.assert_array_equal(d["label"], out[4][0])
    assert d["name"] == "case"
    full = ARPCopyPasted(keys="image", label_keys=("label",), prob_instance=1.0)(data)
    np.testing.assert_array_equal(full["label"][b["instance"] > 0], 2)
    with pytest.raises(KeyError, match="instance_b"):
        ARPCopyPasted()({"image": a["image"], "instance": a["instance"], "image_b": b["image"]})
    with pytest.raises(KeyError, match="label_b"):
        ARPCopyPasted(label_keys=("label",))({k: v for k, v in data.items() if k != "label_b"})
    skipped = ARPCopyPasted(label_keys=("label",), prob_instance=1.0, allow_missing_keys=True)(
        {k: v for k, v in data.items() if k != "label_b"})
    np.testing.assert_array_equal(skipped["label"], a["label"])
