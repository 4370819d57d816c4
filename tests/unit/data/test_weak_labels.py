"""Weak-label files and the supervision manifest: round trip, every bad input, Case and generic-layout wiring."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from scribmed.data.case import CARDIAC, Case, CaseArrays
from scribmed.data.errors import DataError
from scribmed.data.layouts import generic, open_dataset
from scribmed.data.weak_labels import (
    SUPERVISION_TYPES,
    PointSet,
    WeakLabel,
    read_supervision,
    read_weak_label,
    write_supervision,
    write_weak_label,
)

SHAPE = (3, 16, 20)  # S, H, W


def box_label() -> WeakLabel:
    return WeakLabel("box", SHAPE, boxes={0: {1: [(2, 3, 5, 7), (10, 1, 19, 15)]}, 2: {3: [(0, 0, 0, 0)]}},
                     case_id="c1")


def point_label() -> WeakLabel:
    return WeakLabel("point", SHAPE, points={1: {2: PointSet([(4, 5), (19, 15)], [(0, 0)]), 3: PointSet([(7, 7)])}},
                     case_id="c1")


def doc(kind: str = "box", **over) -> dict:
    base = {"schema": "scribmed.weak/1", "case_id": "c1", "type": kind, "shape": list(SHAPE),
            "slices": {"0": {"1": {"boxes": [[2, 3, 5, 7]]}}} if kind == "box"
            else {"0": {"1": {"points": [[2, 3]], "negatives": [[0, 0]]}}}}
    base.update(over)
    return base


def put(tmp_path: Path, content, name: str = "c1.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def err(name: str, problem: str) -> str:
    return re.escape(name) + ".*" + problem


# --- the types and the JSON file --------------------------------------------------------------


def test_types():
    assert SUPERVISION_TYPES == ("full", "box", "point", "scribble", "none")


@pytest.mark.parametrize("make", [box_label, point_label])
def test_round_trip(tmp_path, make):
    weak = make()
    path = write_weak_label(tmp_path / "weak" / "c1.json", weak)
    assert read_weak_label(path, CARDIAC, shape=SHAPE) == weak
    assert WeakLabel.from_json(weak.to_json()) == weak
    data = json.loads(path.read_text())
    assert data["schema"] == "scribmed.weak/1" and data["type"] == weak.kind and data["shape"] == list(SHAPE)
    assert not list(path.parent.glob(".*tmp*"))  # atomic: no temporary left


def test_helpers():
    weak = box_label()
    assert weak.slices() == [0, 2] and weak.classes() == [1, 3]
    mask = weak.box_mask(0, 1)
    assert mask.shape == (16, 20) and mask.dtype == bool
    assert mask[3:8, 2:6].all() and mask[1:16, 10:20].all()  # inclusive corners
    assert mask.sum() == 4 * 5 + 10 * 15
    assert not weak.box_mask(1, 1).any() and weak.box_mask(2, 3).sum() == 1
    pts = point_label()
    assert pts.slices() == [1] and pts.classes() == [2, 3]
    pm = pts.point_map(1, ignore_index=4)
    assert pm.shape == (16, 20) and pm.dtype == np.int64
    assert pm[5, 4] == 2 and pm[15, 19] == 2 and pm[7, 7] == 3 and pm[0, 0] == 4  # negatives are not drawn
    assert (pm != 4).sum() == 3
    assert (pts.point_map(0, 4) == 4).all()


BAD_DOCS = [
    ("not json {", "invalid JSON"),
    ([1, 2], "must hold a JSON object"),
    (doc(schema="scribmed.weak/2"), "unsupported schema version"),
    (doc(schema="other/1"), "unknown schema"),
    (doc(type="tag"), "unknown weak-label type 'tag'"),
    (doc(type="full"), "unknown weak-label type 'full'"),
    (doc(case_id=""), "case_id"),
    (doc(shape=[3, 16]), "shape"),
    (doc(slices={"0": {"1": {"boxes": [[2, 3, 20, 7]]}}}), "box \\[2, 3, 20, 7\\] is outside the image"),
    (doc(slices={"0": {"1": {"boxes": [[-1, 3, 5, 7]]}}}), "is outside the image"),
    (doc(slices={"0": {"1": {"boxes": [[2, 3, 5, 16]]}}}), "is outside the image"),
    (doc(slices={"0": {"1": {"boxes": [[6, 3, 5, 7]]}}}), "x0 > x1"),
    (doc(slices={"0": {"1": {"boxes": [[2, 8, 5, 7]]}}}), "y0 > y1"),
    (doc(slices={"0": {"1": {"boxes": [[2, 3, 5]]}}}), "must be 4 integers"),
    (doc(slices={"0": {"1": {"boxes": [[2, 3, 5, 7.5]]}}}), "must be 4 integers"),
    (doc(slices={"0": {"1": {"points": [[2, 3]]}}}), "unexpected key"),
    (doc("point", slices={"0": {"1": {"points": [[20, 3]]}}}), "point \\[20, 3\\] is outside the image"),
    (doc("point", slices={"0": {"1": {"points": [[2, 3]], "negatives": [[2, 16]]}}}), "point \\[2, 16\\] is outside"),
    (doc(slices={"0": {"7": {"boxes": [[2, 3, 5, 7]]}}}), "class 7 is not in the class map"),
    (doc(slices={"0": {"4": {"boxes": [[2, 3, 5, 7]]}}}), "class 4 is not in the class map"),  # the ignore value
    (doc(slices={"0": {"0": {"boxes": [[2, 3, 5, 7]]}}}), "background class 0 cannot have boxes"),
    (doc("point", slices={"0": {"0": {"points": [[2, 3]]}}}), "background class 0 cannot have positive points"),
    (doc(slices={"3": {"1": {"boxes": [[2, 3, 5, 7]]}}}), "slice index 3 is outside the volume"),
    (doc(slices={"-1": {"1": {"boxes": [[2, 3, 5, 7]]}}}), "slice index -1 is outside"),
    (doc(slices={"x": {"1": {"boxes": [[2, 3, 5, 7]]}}}), "slice index 'x' is not an integer"),
    (doc(shape=[3, 16, 21]), "weak-label shape \\(3, 16, 21\\) does not match image shape \\(3, 16, 20\\)"),
]


@pytest.mark.parametrize("content, problem", BAD_DOCS)
def test_bad_weak_files(tmp_path, content, problem):
    path = put(tmp_path, content)
    with pytest.raises(DataError, match=err("c1.json", problem)) as info:
        read_weak_label(path, CARDIAC, shape=SHAPE)
    assert "\n" not in str(info.value)


def test_background_negatives_are_fine_and_kind_is_checked(tmp_path):
    path = put(tmp_path, doc("point", slices={"0": {"0": {"negatives": [[1, 1]]}}}))
    assert read_weak_label(path, CARDIAC, SHAPE).points[0][0] == PointSet([], [(1, 1)])
    with pytest.raises(DataError, match=err("c1.json", "holds point labels but the case is supervised by box")):
        read_weak_label(path, CARDIAC, SHAPE, kind="box")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=err("nope.json", "missing JSON file")):
        read_weak_label(tmp_path / "nope.json")


def test_write_refuses_an_invalid_label(tmp_path):
    bad = WeakLabel("box", SHAPE, boxes={0: {1: [(5, 0, 2, 3)]}}, case_id="c1")
    with pytest.raises(DataError, match="x0 > x1"):
        write_weak_label(tmp_path / "c1.json", bad)
    assert not (tmp_path / "c1.json").exists()


# --- the manifest ---------------------------------------------------------------------------------


def test_manifest_round_trip(tmp_path):
    mapping = {"b": "box", "a": "full", "c": "none"}
    path = write_supervision(tmp_path / "supervision.json", mapping)
    data = json.loads(path.read_text())
    assert data["schema"] == "scribmed.supervision/1" and list(data["cases"]) == ["a", "b", "c"]
    assert read_supervision(path, ["a", "b", "c", "d"]) == mapping


@pytest.mark.parametrize("content, problem", [
    ("{", "invalid JSON"),
    ({"schema": "scribmed.supervision/9", "cases": {}}, "unsupported schema version"),
    ({"cases": {}}, "unknown schema"),
    ({"schema": "scribmed.supervision/1", "cases": []}, "\"cases\" must map"),
    ({"schema": "scribmed.supervision/1", "cases": {"a": "mask"}}, "case a: unknown supervision type 'mask'"),
    ({"schema": "scribmed.supervision/1", "cases": {"a": "box", "zz": "full"}}, "absent from the dataset: zz"),
])
def test_bad_manifest(tmp_path, content, problem):
    path = put(tmp_path, content, "supervision.json")
    with pytest.raises(DataError, match=err("supervision.json", problem)):
        read_supervision(path, ["a", "b"])


def test_write_manifest_refuses_unknown_type(tmp_path):
    with pytest.raises(DataError, match="unknown supervision type 'tags'"):
        write_supervision(tmp_path / "supervision.json", {"a": "tags"})


# --- Case ------------------------------------------------------------------------------------------


def test_case_weak_is_lazy_and_cached():
    calls = []

    def loader():
        calls.append(1)
        return box_label()

    arrays = CaseArrays(np.zeros(SHAPE, np.float32))
    case = Case("c1", "p1", Path("c1.nii.gz"), lambda: arrays, True, False, supervision="box", weak_loader=loader)
    assert case.has_weak and not calls
    assert case.weak == box_label() and case.weak is case.weak and len(calls) == 1
    case.release()
    assert case.weak is not None and len(calls) == 1
    plain = Case("c2", "p2", Path("c2.nii.gz"), lambda: arrays)
    assert not plain.has_weak and plain.weak is None and plain.supervision is None


# --- generic layout --------------------------------------------------------------------------------


def arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 4, SHAPE).astype(np.uint8)
    scribble = np.where(rng.random(SHAPE) < 0.2, label, 4).astype(np.uint8)
    return rng.random(SHAPE).astype(np.float32), label, scribble


@pytest.fixture()
def mixed(tmp_path) -> Path:
    """c1 box, c2 point, c3 scribble, c4 full, c5 none (manifest written)."""
    root = tmp_path / "ds"
    img, lab, scb = arrays()
    generic.write_case(root, "c1", "p1", img, lab, weak=box_label(), class_map=CARDIAC)
    generic.write_case(root, "c2", "p1", img, lab, weak=point_label(), class_map=CARDIAC)
    generic.write_case(root, "c3", "p2", img, lab, scb, class_map=CARDIAC)
    generic.write_case(root, "c4", "p3", img, lab, class_map=CARDIAC)
    generic.write_case(root, "c5", "p4", img, class_map=CARDIAC)
    generic.write_supervision_manifest(root, {"c1": "box", "c2": "point", "c3": "scribble"})
    generic.write_supervision_manifest(root, {"c4": "full", "c5": "none"})  # merges
    return root


def test_generic_reads_weak_and_supervision(mixed):
    ds = open_dataset("generic", mixed)
    assert [c.supervision for c in ds] == ["box", "point", "scribble", "full", "none"]
    assert [c.has_weak for c in ds] == [True, True, False, False, False]
    assert all(c._cache is None for c in ds)  # listing reads no voxels
    assert ds["c1"].weak == box_label()
    assert ds["c2"].weak.kind == "point" and ds["c2"].weak.points[1][3].positive == [(7, 7)]
    assert ds["c1"]._cache is None  # the weak label checks the header shape, not the voxels
    assert ds.meta["c1"]["files"]["weak"] == mixed / "weak" / "c1.json"
    s = ds.summary()
    assert s["with_weak"] == 2 and s["supervision"] == {"box": 1, "full": 1, "none": 1, "point": 1, "scribble": 1}
    ds.validate(progress=False)


def test_generic_without_weak_is_unchanged(tmp_path):
    img, lab, scb = arrays()
    generic.write_case(tmp_path, "a", "a", img, lab, scb, class_map=CARDIAC)
    ds = open_dataset("generic", tmp_path)
    assert ds["a"].supervision is None and not ds["a"].has_weak
    assert "with_weak" not in ds.summary() and "supervision" not in ds.summary()


@pytest.mark.parametrize("mapping, problem", [
    ({"c3": "box"}, "case c3 is supervised by box but has no weak-label file"),
    ({"c3": "point"}, "case c3 is supervised by point but has no weak-label file"),
    ({"c4": "scribble"}, "case c4 is supervised by scribble but has no scribble"),
    ({"c5": "full"}, "case c5 is supervised by full but has no label"),
    ({"c9": "full"}, "absent from the dataset: c9"),
])
def test_generic_manifest_checked_at_open(mixed, mapping, problem):
    generic.write_supervision_manifest(mixed, mapping)
    with pytest.raises(DataError, match=err("supervision.json", problem)):
        open_dataset("generic", mixed)


def test_generic_weak_shape_checked_against_image(mixed):
    path = mixed / "weak" / "c1.json"
    data = json.loads(path.read_text())
    data["shape"] = [3, 16, 30]
    path.write_text(json.dumps(data))
    ds = open_dataset("generic", mixed)
    with pytest.raises(DataError, match=err("c1.json", "weak-label shape \\(3, 16, 30\\) does not match image shape")):
        ds["c1"].weak
    with pytest.raises(DataError, match=err("c1.json", "does not match image shape")):
        ds.validate(progress=False)


def test_generic_weak_kind_and_case_id_checked(mixed):
    (mixed / "weak" / "c2.json").write_text((mixed / "weak" / "c1.json").read_text())  # a box file for c2
    ds = open_dataset("generic", mixed)
    with pytest.raises(DataError, match=err("c2.json", "holds box labels but the case is supervised by point")):
        ds["c2"].weak
    generic.write_supervision_manifest(mixed, {"c2": "box"})
    with pytest.raises(DataError, match=err("c2.json", "case_id 'c1' does not match the file name")):
        open_dataset("generic", mixed)["c2"].weak


def test_generic_weak_without_image_is_a_problem(mixed):
    (mixed / "weak" / "ghost.json").write_text(json.dumps(doc()))
    ds = open_dataset("generic", mixed)
    with pytest.raises(DataError, match=err("ghost.json", "no image for case ghost")):
        ds.validate(progress=False)


def test_write_case_refuses_weak_on_another_grid(tmp_path):
    img, lab, _ = arrays()
    wrong = WeakLabel("box", (3, 16, 21), case_id="c1")
    with pytest.raises(ValueError, match="does not match image shape"):
        generic.write_case(tmp_path, "c1", "p1", img, lab, weak=wrong, class_map=CARDIAC)


def test_docs_examples_are_valid(tmp_path):
    text = (Path(__file__).resolve().parents[3] / "docs" / "data.md").read_text()
    blocks = [b for b in re.findall(r"```json\n(.*?)```", text, re.S) if "scribmed." in b]
    kinds = set()
    for i, block in enumerate(blocks):
        path = put(tmp_path, block, f"example{i}.json")
        if "scribmed.weak/1" in block:
            kinds.add(read_weak_label(path, CARDIAC).kind)
        else:
            assert read_supervision(path)
    assert kinds == {"box", "point"} and len(blocks) == 3
