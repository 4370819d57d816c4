"""The dsb2018 layout (one mask PNG per nucleus), the nuclei phantom and the dsb2018_5fold split."""

from __future__ import annotations

import csv
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset, write_dataset
from scribmed.data.layouts.dsb2018 import LUMA_601, NUCLEI, mask_name, write_case
from scribmed.data.phantoms import make_nuclei_image, write_nuclei_dataset
from scribmed.data.split_files import SPLITS_DIR, dumps_split, load_split
from scribmed.data.split_protocols import DSB2018_IDS, dsb2018_5fold

REPO = Path(__file__).resolve().parents[3]
DSB_ROOT = Path(os.environ.get("SCRIBMED_SHARED_DATA", REPO.parent / "shared" / "data")) / "DSB2018"


def _instances() -> np.ndarray:
    inst = np.zeros((1, 20, 24), dtype=np.int32)
    inst[0, 2:6, 3:9] = 1
    inst[0, 2:6, 9:12] = 2  # touches instance 1
    inst[0, 10:17, 4:8] = 3
    inst[0, 12:15, 15:22] = 4
    return inst


def _image(rng: np.random.Generator, shape: tuple[int, ...] = (1, 20, 24)) -> np.ndarray:
    return rng.uniform(0, 1, shape).astype(np.float32)


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


# ------------------------------------------------------------------------------------ round trip


def test_write_read_round_trip(tmp_path: Path):
    rng = np.random.default_rng(0)
    image, inst = _image(rng), _instances()
    write_case(tmp_path, "img_a", "img_a", image, instance=inst)
    write_case(tmp_path, "img_b", "img_b", _image(rng))  # image only: an unlabelled case
    masks = sorted(p.name for p in (tmp_path / "img_a" / "masks").iterdir())
    assert masks == [mask_name("img_a", k, 4) for k in range(1, 5)] == [f"img_a_mask_{k:04d}.png" for k in range(1, 5)]
    ds = open_dataset("dsb2018", tmp_path)
    assert ds.case_ids == ["img_a", "img_b"] and ds.patients == ["img_a", "img_b"]
    assert ds.class_map == NUCLEI and NUCLEI.ignore_index == 2 and ds.spacing_unit == "none"
    a, b = ds["img_a"], ds["img_b"]
    assert a._cache is None and a.has_label and a.has_instance and not a.has_scribble  # listing read no pixels
    assert not b.has_label and not b.has_instance and b.label is None and b.instance is None
    assert a.image.dtype == np.float32 and a.image.shape == (1, 20, 24)
    assert np.abs(a.image - image).max() <= 0.5 / 255 + 1e-6  # uint8 quantisation only
    assert a.instance.dtype == np.int32 and np.array_equal(a.instance, inst)
    assert a.label.dtype == np.uint8 and np.array_equal(a.label, (inst > 0).astype(np.uint8))
    assert a.scribble is None and a.spacing is None
    assert ds.meta["img_a"]["instances"] == 4 and ds.meta["img_b"]["instances"] == 0
    ds.validate(progress=False)
    # the release's stage1_test/ folder is found too
    write_case(tmp_path / "rel" / "stage1_test", "x", "x", image, instance=inst)
    assert open_dataset("dsb2018", tmp_path / "rel").case_ids == ["x"]


def test_rewrite_and_label_only_and_non_contiguous_ids(tmp_path: Path):
    rng = np.random.default_rng(1)
    inst = _instances()
    write_case(tmp_path, "c", "c", _image(rng), instance=inst)
    sparse = np.where(inst == 4, 9, np.where(inst == 3, 0, inst))  # ids 1, 2, 9 -> renumbered 1, 2, 3
    write_case(tmp_path, "c", "c", _image(rng), instance=sparse)  # stale 4th mask removed
    got = open_dataset("dsb2018", tmp_path)["c"].instance
    assert len(list((tmp_path / "c" / "masks").iterdir())) == 3
    assert np.array_equal(got, np.where(sparse == 9, 3, sparse))
    # a label alone: one instance per 8-connected component (touching 1 and 2 merge)
    write_case(tmp_path, "d", "d", _image(rng), label=(inst > 0).astype(np.uint8))
    assert open_dataset("dsb2018", tmp_path)["d"].instance.max() == 3


def test_write_case_refusals(tmp_path: Path):
    img, inst = _image(np.random.default_rng(2)), _instances()
    with pytest.raises(ValueError, match="patient_id must equal case_id"):
        write_case(tmp_path, "a", "p", img, instance=inst)
    with pytest.raises(ValueError, match="label and instance map disagree"):
        write_case(tmp_path, "a", "a", img, label=np.zeros_like(inst), instance=inst)
    with pytest.raises(ValueError, match="does not match"):
        write_case(tmp_path, "a", "a", img, instance=inst[:, :10])
    _png(tmp_path / "b" / "masks" / "other.png", np.zeros((20, 24), np.uint8))
    with pytest.raises(ValueError, match="holds other mask files"):
        write_case(tmp_path, "b", "b", img, instance=inst)


def test_write_dataset_copies_instances_and_other_layouts_keep_the_label(tmp_path: Path):
    rng = np.random.default_rng(3)
    write_case(tmp_path / "src", "a", "a", _image(rng), instance=_instances())
    src = open_dataset("dsb2018", tmp_path / "src")
    write_dataset("dsb2018", tmp_path / "copy", src)
    assert np.array_equal(open_dataset("dsb2018", tmp_path / "copy")["a"].instance, _instances())
    write_dataset("generic", tmp_path / "gen", src, class_map=NUCLEI)  # generic stores no instances
    assert np.array_equal(open_dataset("generic", tmp_path / "gen")["a"].label, src["a"].label)


def test_channels(tmp_path: Path):
    rng = np.random.default_rng(4)
    rgb = _image(rng, (1, 3, 20, 24))
    write_case(tmp_path, "rgb", "rgb", rgb, instance=_instances())
    grey = np.repeat(_image(rng), 3, axis=0)[None]  # R = G = B
    write_case(tmp_path, "grey", "grey", grey)
    colour = open_dataset("dsb2018", tmp_path, channels=3)
    assert colour["rgb"].image.shape == (1, 3, 20, 24) and colour["rgb"].image.dtype == np.float32
    assert np.abs(colour["rgb"].image - rgb).max() <= 0.5 / 255 + 1e-6
    assert np.array_equal(colour["rgb"].instance, _instances())
    colour.validate()  # (slices, C, H, W) images pass the dataset checks (label on the per-channel grid)
    mono = open_dataset("dsb2018", tmp_path)
    stored = colour["rgb"].image[0]
    luma = sum(w * stored[c] for c, w in enumerate(LUMA_601))
    assert mono["rgb"].image.shape == (1, 20, 24) and np.allclose(mono["rgb"].image[0], luma, atol=1e-6)
    assert np.array_equal(mono["grey"].image[0], colour["grey"].image[0, 0])  # the channel itself
    # RGBA: alpha dropped
    rgba = np.concatenate([np.full((20, 24, 3), 51, np.uint8), np.full((20, 24, 1), 7, np.uint8)], axis=-1)
    _png(tmp_path / "alpha" / "images" / "alpha.png", rgba)
    assert np.allclose(open_dataset("dsb2018", tmp_path)["alpha"].image, 0.2)
    with pytest.raises(DataError, match="channels must be 1 .* or 3"):
        open_dataset("dsb2018", tmp_path, channels=2)


# ------------------------------------------------------------------------------------ bad input


@pytest.fixture()
def one_image(tmp_path: Path) -> Path:
    _png(tmp_path / "im" / "images" / "im.png", np.full((10, 12), 100, np.uint8))
    return tmp_path


def _mask(root: Path, name: str, rows: slice, cols: slice, value: int = 255, shape=(10, 12)) -> Path:
    m = np.zeros(shape, np.uint8)
    m[rows, cols] = value
    path = root / "im" / "masks" / name
    _png(path, m)
    return path


@pytest.mark.parametrize("case", ["non-binary", "empty", "shape", "overlap", "corrupt"])
def test_bad_masks_name_the_file(one_image: Path, case: str):
    _mask(one_image, "im_0.png", slice(0, 3), slice(0, 3))
    if case == "non-binary":
        bad = _mask(one_image, "im_1.png", slice(5, 8), slice(5, 8))
        m = np.asarray(Image.open(bad)).copy()
        m[5, 5] = 128
        _png(bad, m)
        expect = r"mask is not binary \(values 0, 128, 255; expected 0 and 255\)"
    elif case == "empty":
        bad = _mask(one_image, "im_1.png", slice(0, 0), slice(0, 0))
        expect = r"mask is empty"
    elif case == "shape":
        bad = _mask(one_image, "im_1.png", slice(0, 2), slice(0, 2), shape=(10, 11))
        expect = r"mask shape \(10, 11\) does not match image shape \(10, 12\)"
    elif case == "overlap":
        bad = _mask(one_image, "im_1.png", slice(2, 5), slice(2, 5))
        expect = r"mask overlaps the earlier mask im_0.png \(1 pixel\(s\)\)"
    else:
        bad = one_image / "im" / "masks" / "im_1.png"
        bad.write_bytes(b"\x89PNG truncated")
        expect = r"cannot read mask PNG"
    ds = open_dataset("dsb2018", one_image)  # listing is cheap: nothing read yet
    with pytest.raises(DataError) as err:
        ds["im"].load()
    assert str(err.value).startswith(f"{bad}: ") and "\n" not in str(err.value)
    assert re.search(expect, str(err.value)), str(err.value)


def test_masks_in_natural_order_and_listing_problems(one_image: Path):
    for n, col in ((10, 0), (2, 4), (1, 8)):
        _mask(one_image, f"im_{n}.png", slice(0, 2), slice(col, col + 2))
    inst = open_dataset("dsb2018", one_image)["im"].instance[0]
    assert (inst[0, 8], inst[0, 4], inst[0, 0]) == (1, 2, 3)  # im_1, im_2, im_10
    (one_image / "orphan" / "masks").mkdir(parents=True)
    ds = open_dataset("dsb2018", one_image)
    assert ds.case_ids == ["im"] and "no images/orphan.png" in str(ds.problems[0])
    with pytest.raises(DataError, match="no images/orphan.png"):
        ds.validate(progress=False)
    (one_image / "none").mkdir()
    with pytest.raises(DataError, match="no <id>/images/<id>.png image folders found"):
        open_dataset("dsb2018", one_image / "none")


# ------------------------------------------------------------------------------------ phantom


def test_nuclei_phantom(tmp_path: Path):
    rng = np.random.default_rng(0)
    image, inst = make_nuclei_image(rng, (96, 128), (8, 12))
    assert image.shape == inst.shape == (96, 128) and image.dtype == np.float32 and inst.dtype == np.int32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert 8 <= inst.max() <= 12 and set(np.unique(inst)) == set(range(inst.max() + 1))
    assert image[inst > 0].mean() > image[inst == 0].mean() + 0.2
    start = time.perf_counter()
    ids = write_nuclei_dataset(tmp_path / "nuc", n_images=10, seed=3)
    assert time.perf_counter() - start < 2.0  # < 1 s on an idle core
    ds = open_dataset("dsb2018", tmp_path / "nuc")
    assert ds.case_ids == ids == [f"nuclei{i:03d}" for i in range(10)]
    ds.validate(progress=False)
    touching = 0
    for case in ds:
        lab = case.instance[0]
        touching += int(np.any((lab[:, 1:] != lab[:, :-1]) & (lab[:, 1:] > 0) & (lab[:, :-1] > 0)))
    assert touching >= 2  # a few images have touching nuclei
    again = write_nuclei_dataset(tmp_path / "nuc2", n_images=3, seed=3)
    assert np.array_equal(open_dataset("dsb2018", tmp_path / "nuc2")[again[2]].instance, ds[ids[2]].instance)


# ------------------------------------------------------------------------------------ split


def test_split_file_regenerates():
    path = SPLITS_DIR / "dsb2018_5fold.json"
    assert path.read_text(encoding="utf-8") == dumps_split(dsb2018_5fold())
    split = load_split("dsb2018_5fold")
    assert split == dsb2018_5fold() and split.num_folds == 5
    assert [(len(f.train), len(f.val), len(f.test)) for f in split.folds] == [(36, 4, 10)] * 5
    tested = [p for f in split.folds for p in f.test]
    assert len(tested) == len(set(tested)) == 50 and sorted(tested) == sorted(DSB2018_IDS)


# ------------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def dsb_root() -> Path:
    if not (DSB_ROOT / "stage1_test").is_dir():
        pytest.skip(f"real DSB2018 not found at {DSB_ROOT} (set SCRIBMED_SHARED_DATA)")
    return DSB_ROOT


def _rle_masks(root: Path, image_id: str) -> list[np.ndarray]:
    """The solution CSV's masks of one image: column-major, 1-based starts, (start, length) pairs."""
    out = []
    with open(root / "stage1_solution.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["ImageId"] != image_id:
                continue
            h, w = int(row["Height"]), int(row["Width"])
            flat = np.zeros(h * w, dtype=bool)
            runs = np.asarray(row["EncodedPixels"].split(), dtype=np.int64).reshape(-1, 2)
            for start, length in runs:
                flat[start - 1 : start - 1 + length] = True
            out.append(flat.reshape(w, h).T)
    return out


@pytest.mark.realdata
def test_real_images(dsb_root: Path):
    ds = open_dataset("dsb2018", dsb_root)
    assert len(ds) == 50 and sorted(ds.case_ids) == sorted(DSB2018_IDS)
    by_size = sorted(ds.case_ids, key=lambda i: ds.meta[i]["instances"])
    for case_id in (by_size[0], by_size[25], by_size[-1]):
        case = ds[case_id]
        n_masks = len(list((dsb_root / "stage1_test" / case_id / "masks").glob("*.png")))
        image, inst, label = case.image, case.instance, case.label
        assert image.ndim == 3 and image.shape[0] == 1 and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert inst.shape == label.shape == image.shape and inst.dtype == np.int32
        assert inst.max() == n_masks == ds.meta[case_id]["instances"]
        assert set(np.unique(inst)) == set(range(n_masks + 1))
        assert np.array_equal(label, (inst > 0).astype(np.uint8))
        rgb = open_dataset("dsb2018", dsb_root, channels=3)[case_id].image
        assert rgb.shape == (1, 3, *image.shape[1:])
        case.release()


@pytest.mark.realdata
def test_real_masks_equal_the_solution_rle(dsb_root: Path):
    case_id = "0114f484a16c152baa2d82fdd43740880a762c93f436c8988ac461c5c9dbe7d5"
    inst = open_dataset("dsb2018", dsb_root)[case_id].instance[0]
    rle = _rle_masks(dsb_root, case_id)
    assert len(rle) == inst.max() == 7
    for k, mask in enumerate(rle, start=1):  # the CSV rows follow the masks' natural order
        assert np.array_equal(inst == k, mask)


@pytest.mark.realdata
def test_real_data_check_with_the_split(dsb_root: Path, capsys):
    from scribmed.cli import main

    assert main(["data", "check", "--layout", "dsb2018", "--root", str(dsb_root), "--split", "dsb2018_5fold",
                 "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["cases"], report["with_label"], report["spacing"]) == (50, 50, "none")
    assert report["split"]["folds"] == 5 and "missing_patients_dropped" not in report["split"]
