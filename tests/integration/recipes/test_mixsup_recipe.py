"""The ``mixsup`` recipe: weak-label prompting in the SAM rounds, the mixed slice cache, the SeSAM trainer,
supervision assignment and the CLI, on tiny phantoms with a fake SAM (tests/fakes.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import DecodeSpy, fake_backend

from scribmed.cli import main
from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.data.supervision_assignment import apply_supervision, mix_assignment
from scribmed.data.weak_conversion import make_weak_dataset
from scribmed.data.weak_labels import SUPERVISION_TYPES, write_supervision
from scribmed.recipes.mixsup.trainer import (
    MixSupTrainConfig,
    box_bits_to_masks,
    mixsup_cache,
    train_mixsup,
)
from scribmed.recipes import build
from scribmed.recipes.mixsup.recipe import MixSupRecipe
from scribmed.sam.finetune_config import FinetuneConfig
from scribmed.sam.pseudo_labels import load_confidence, load_pseudo_labels
from scribmed.sam.rounds import run_pseudo_label_rounds
from scribmed.sam.stage_config import RoundsConfig
from scribmed.sam.weak_prompting import WeakPromptConfig, case_supervision, case_target

pytestmark = pytest.mark.usefixtures("one_thread")

MIX = {"full": 0.2, "box": 0.3, "point": 0.3, "scribble": 0.2}
TINY = dict(iterations=4, val_interval=2, batch_size=2, size=32, device="cpu", seed=0, progress=False)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    """Six cardiac phantom patients (acdc-h5), one frame, two 64x64 slices, real phantom scribbles."""
    out = tmp_path_factory.mktemp("mixsup") / "acdc"
    return write_phantom_dataset("cardiac", "acdc-h5", out, n_patients=6, seed=3, size=(64, 64),
                                 slices=(2, 2), frames=("ED",))


@pytest.fixture(scope="module")
def weak_root(phantom, tmp_path_factory) -> Path:
    """The phantom as a generic-layout weak dataset with every supervision type (weak make, seed 0)."""
    out = tmp_path_factory.mktemp("mixsup_weak") / "weak"
    make_weak_dataset(open_dataset("acdc-h5", phantom), out, MIX, seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def split_file(tmp_path_factory) -> Path:
    split = {"name": "tiny", "unit": "patient", "folds": [
        {"train": ["patient001", "patient002", "patient003", "patient004"], "val": ["patient005"],
         "test": ["patient006"]}]}
    path = tmp_path_factory.mktemp("split") / "tiny.json"
    path.write_text(json.dumps(split))
    return path


def _patch_backend(monkeypatch) -> list:
    import scribmed.networks.sam_registry as sb

    built: list = []

    def fake_build(name, checkpoint=None, device="cpu", **kw):
        assert name == "lite_medsam"
        built.append(fake_backend())
        return built[-1]

    monkeypatch.setattr(sb, "build_sam_backend", fake_build)
    return built


def test_case_targets_read_only_what_the_type_allows(weak_root):
    ds = open_dataset("generic", weak_root)
    ignore = ds.class_map.ignore_index
    seen = set()
    for case in ds.cases:
        kind = case_supervision(case)
        seen.add(kind)
        t = case_target(case, ds.class_map)
        assert t.shape == case.label.shape and t.dtype == np.int64
        if kind == "full":
            assert np.array_equal(t, case.label)
        elif kind == "scribble":
            assert np.array_equal(t, case.scribble)
        elif kind == "point":
            pts = case.weak.points
            n = sum(len(p.positive) for per in pts.values() for p in per.values())
            assert 0 < int((t != ignore).sum()) <= n
            assert np.all(t[t != ignore] == case.label[t != ignore])  # points lie on their class
        elif kind == "box":
            inside = np.zeros(t.shape, bool)
            for z in range(t.shape[0]):
                for k in case.weak.boxes.get(z, {}):
                    inside[z] |= case.weak.box_mask(z, k)
            assert np.all(t[inside] == ignore) and np.all(t[~inside] == 0)
            assert np.all(case.label[~inside] == 0)  # outside every box really is background
    assert seen == {"full", "box", "point", "scribble"}
    case = ds.cases[0]
    assert np.all(case_target(case, ds.class_map, "none") == ignore)


def test_scribble_only_supervision_reduces_to_samsp_rounds(phantom, tmp_path):
    """With every case supervised by its scribble, weak prompting gives SAM-SP's pseudo labels exactly."""
    ds = open_dataset("acdc-h5", phantom)
    cfg = FinetuneConfig(epochs=1, n_points=3, progress=False)
    kw = dict(train_patients=["patient001", "patient002", "patient003"], val_patients=["patient004"], progress=False)
    samsp = RoundsConfig(fake_backend(), rounds=1, finetune_config=cfg)
    a = run_pseudo_label_rounds(ds, tmp_path / "samsp", samsp, **kw)
    apply_supervision(ds, {c.case_id: "scribble" for c in ds.cases})
    weak = RoundsConfig(fake_backend(), rounds=1, finetune_config=cfg, weak_prompts=WeakPromptConfig())
    b = run_pseudo_label_rounds(ds, tmp_path / "weak", weak, **kw)
    ids = [c.case_id for c in ds.cases_of(["patient001", "patient002", "patient003"])]
    for r in (0, 1):
        pa, pb = load_pseudo_labels(a.round_dirs[r], ids), load_pseudo_labels(b.round_dirs[r], ids)
        for cid in ids:
            assert np.array_equal(pa[cid], pb[cid])
            assert np.array_equal(load_confidence(a.round_dirs[r], cid), load_confidence(b.round_dirs[r], cid))
    wa = torch.load(a.decoders[1], weights_only=True)["model"]
    wb = torch.load(b.decoders[1], weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    run = json.loads((tmp_path / "weak" / "run.json").read_text())
    assert run["weak_prompts"]["selection"] == "sesam" and set(run["supervision"].values()) == {"scribble"}
    assert json.loads((tmp_path / "samsp" / "run.json").read_text())["weak_prompts"] is None  # scribbles only


def test_weak_rounds_prompt_every_type(weak_root, tmp_path):
    ds = open_dataset("generic", weak_root)
    backend = fake_backend()
    spy = DecodeSpy(backend)
    kinds = {c.case_id: case_supervision(c) for c in ds.cases}
    res = run_pseudo_label_rounds(ds, tmp_path / "r", RoundsConfig(backend, rounds=0, weak_prompts=WeakPromptConfig()),
                                  progress=False, train_patients=[c.patient_id for c in ds.cases])
    pseudo = load_pseudo_labels(res.round_dirs[0], list(kinds))
    by_type = res.quality["rounds"][0]["dice_by_supervision"]  # quality per supervision type
    assert set(by_type) == set(kinds.values()) and sum(e["cases"] for e in by_type.values()) == len(kinds)
    assert by_type["full"]["dice"] == {"RV": 1.0, "Myo": 1.0, "LV": 1.0}
    for case in ds.cases:
        if kinds[case.case_id] == "full":  # the label is its own pseudo label, SAM is not asked
            assert np.array_equal(pseudo[case.case_id], case.label)
    boxes = [c for c in spy.calls if c["boxes"] is not None and c["coords"].shape[1] == 0]
    multimask = [c for c in spy.calls if c["multimask"]]
    assert boxes, "box cases are prompted with boxes only"
    assert multimask, "zero-shot point (and scribble) prompts ask SAM for its three masks"
    # a rerun with another assignment is refused (the supervision is part of the run record)
    other = {cid: ("scribble" if k == "full" and open_dataset("generic", weak_root)[cid].has_scribble else k)
             for cid, k in kinds.items()}
    ds2 = open_dataset("generic", weak_root)
    apply_supervision(ds2, {**other, next(iter(kinds)): "none"})
    with pytest.raises(DataError, match="other settings"):
        run_pseudo_label_rounds(ds2, tmp_path / "r",
                                RoundsConfig(fake_backend(), rounds=0, weak_prompts=WeakPromptConfig()), progress=False,
                                train_patients=[c.patient_id for c in ds.cases if c.case_id != next(iter(kinds))])


def test_simulated_weak_labels_equal_weak_make(phantom, weak_root):
    """--supervision-mix simulates exactly the boxes and points `scribmed weak make` writes (same seed)."""
    ds = open_dataset("acdc-h5", phantom)
    record = apply_supervision(ds, mix_assignment(ds, MIX, 0), simulate=True, seed=0, source="test")
    written = open_dataset("generic", weak_root)
    for case in ds.cases:
        assert case.supervision == written[case.case_id].supervision
        if case.supervision in ("box", "point"):
            assert case.weak.to_json()["slices"] == written[case.case_id].weak.to_json()["slices"]
    assert record["simulated_weak_labels"]["cases"] == sum(c.supervision in ("box", "point") for c in ds.cases)
    assert sum(record["cases"].values()) == len(ds.cases)
    fresh = open_dataset("acdc-h5", phantom)
    with pytest.raises(DataError, match="simulate-weak"):
        apply_supervision(fresh, {fresh.cases[0].case_id: "box"})
    with pytest.raises(DataError, match="absent from the dataset"):
        apply_supervision(fresh, {"patient999_frame01": "box"})


def test_mixed_slice_cache_holds_each_types_view(weak_root):
    ds = open_dataset("generic", weak_root)
    kinds = {c.case_id: case_supervision(c) for c in ds.cases}
    pseudo = {c.case_id: np.asarray(c.label, np.uint8) for c in ds.cases}
    cfg = MixSupTrainConfig(size=(64, 64), device="cpu", progress=False)
    cache = mixsup_cache(ds.cases, ds.class_map, kinds, pseudo, cfg)
    ignore = ds.class_map.ignore_index
    assert set(cache.extras) == {"weak", "full", "box_bits", "sam"} and cache.codes.shape == (len(cache),)
    for case in ds.cases:
        rows = cache.slices_of(case.case_id)
        kind = kinds[case.case_id]
        assert set(cache.codes[rows].tolist()) == {SUPERVISION_TYPES.index(kind)}
        full, weak, bits = cache.extras["full"][rows], cache.extras["weak"][rows], cache.extras["box_bits"][rows]
        assert (np.array_equal(full, case.label) if kind == "full" else np.all(full == ignore))
        assert (np.any(weak != ignore) if kind in ("scribble", "point") else np.all(weak == ignore))
        if kind == "box":
            masks = box_bits_to_masks(torch.as_tensor(bits), ds.class_map.num_classes).numpy()
            for z in range(bits.shape[0]):
                for k in ds.class_map.foreground:
                    assert np.array_equal(masks[z, k], case.weak.box_mask(z, k))
        else:
            assert not bits.any()


def test_mixsup_training_resumes_exactly_with_its_teacher(weak_root, tmp_path, monkeypatch):
    from scribmed.recipes.mixsup import trainer as mod

    ds = open_dataset("generic", weak_root)
    train, val = ds.cases[:4], ds.cases[4:5]
    kinds = {c.case_id: case_supervision(c) for c in train}
    kinds[train[0].case_id] = "none"  # unlabeled: only the teacher speaks there
    pseudo = {c.case_id: np.asarray(c.label, np.uint8) for c in train}
    cfg = MixSupTrainConfig(iterations=4, epoch_length=2, batch_size=2, size=(32, 32), device="cpu", progress=False,
                            teacher_weight=0.5, confidence=0.0)
    ref = train_mixsup(train, val, ds.class_map, tmp_path / "ref", kinds, pseudo, cfg)
    ckpt = torch.load(ref.last_checkpoint, weights_only=True)
    assert ckpt["recipe"] == "mixsup" and int(ckpt["loss"]["teacher.num_updates"]) == 4
    hist = json.loads(ref.history_path.read_text())
    assert hist["loss_terms"] == ["weak", "sam", "teacher"]
    assert all(np.isfinite(e[k]) for e in hist["epochs"] for k in ("loss", "weak", "sam", "teacher"))
    assert max(e["teacher"] for e in hist["epochs"]) > 0  # confidence 0: the teacher labels the unlabeled case

    original = mod.MixSupTrainer.compute_loss
    calls = {"n": 0}

    def dies_at_third(self, outputs, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return original(self, outputs, batch)

    monkeypatch.setattr(mod.MixSupTrainer, "compute_loss", dies_at_third)
    with pytest.raises(KeyboardInterrupt):
        train_mixsup(train, val, ds.class_map, tmp_path / "killed", kinds, pseudo, cfg)
    monkeypatch.setattr(mod.MixSupTrainer, "compute_loss", original)
    train_mixsup(train, val, ds.class_map, tmp_path / "killed", kinds, pseudo, cfg, resume=True)
    got = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    for part in ("network", "loss"):  # student and teacher as if never stopped
        assert all(torch.equal(got[part][k], ckpt[part][k]) for k in ckpt[part])


def test_build_routes_mixsup_options():
    r = build("mixsup", iterations=10, rounds=1, weak_selection="score", weak_box_margin=2, teacher_weight=0.1)
    assert isinstance(r, MixSupRecipe) and r.config.iterations == 10 and r.sam.rounds == 1
    assert (r.weak.selection, r.weak.box_margin, r.config.teacher_weight) == ("score", 2, 0.1)
    d = r.config_dict()
    assert d["weak_prompts"]["selection"] == "score" and "lam" not in d["segmentor"]
    assert r.config.upsample == "bilinear" and r.config.channels_last  # DMPLS's segmentor defaults
    with pytest.raises(ValueError, match="selection must be one of"):
        build("mixsup", weak_selection="best")
    with pytest.raises(ValueError, match="does not take align_weight"):
        build("mixsup", align_weight=1.0)


def _fails(argv: list[str], capsys, match: str) -> None:
    """The CLI exits non-zero with a one-line error containing ``match``."""
    capsys.readouterr()
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1, err


def test_cv_mixsup_with_a_simulated_mix_end_to_end(phantom, split_file, tmp_path, monkeypatch, capsys):
    built = _patch_backend(monkeypatch)
    out = tmp_path / "cv"
    argv = ["cv", "--recipe", "mixsup", "--layout", "acdc-h5", "--root", str(phantom), "--split", str(split_file),
            "--out", str(out), "--iterations", "4", "--val-interval", "2", "--batch-size", "2", "--size", "32",
            "--device", "cpu", "--rounds", "1", "--sam-epochs", "1", "--n-points", "3", "--quiet",
            "--supervision-mix", "full=0.2,box=0.3,point=0.3,scribble=0.2", "--supervision-seed", "0"]
    assert main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"] == "mixsup" and run["supervision"]["simulated_weak_labels"]["seed"] == 0
    assert sum(run["supervision"]["cases"].values()) == 6
    fold = json.loads((out / "fold_1" / "fold.json").read_text())
    assert fold["sam_stage"] == "rounds" and sum(fold["supervision"].values()) == 4
    assert (out / "fold_1" / "train" / "sam" / "round_1" / "round.json").is_file()
    assert torch.load(out / "fold_1" / "train" / "segmentor" / "last.pt", weights_only=True)["recipe"] == "mixsup"
    assert (out / "summary.json").is_file() and built
    # another mix into the same run directory is refused
    argv2 = [a if a != "full=0.2,box=0.3,point=0.3,scribble=0.2" else "box=1.0" for a in argv]
    _fails(argv2, capsys, "other settings (supervision)")


def test_every_full_fold_skips_sam(phantom, split_file, tmp_path, monkeypatch):
    built = _patch_backend(monkeypatch)
    out = tmp_path / "cv"
    assert main(["cv", "--recipe", "mixsup", "--layout", "acdc-h5", "--root", str(phantom), "--split",
                 str(split_file), "--out", str(out), "--iterations", "2", "--val-interval", "2", "--batch-size", "2",
                 "--size", "32", "--device", "cpu", "--quiet", "--supervision-mix", "full=1.0"]) == 0
    fold = json.loads((out / "fold_1" / "fold.json").read_text())
    assert fold["sam_stage"].startswith("skipped") and fold["supervision"]["full"] == 4
    assert not built and not (out / "fold_1" / "train" / "sam").exists()


def test_supervision_flags_are_checked(phantom, split_file, tmp_path, capsys):
    base = ["cv", "--layout", "acdc-h5", "--root", str(phantom), "--split", str(split_file), "--iterations", "2",
            "--val-interval", "2", "--batch-size", "2", "--size", "32", "--device", "cpu", "--quiet"]
    manifest = write_supervision(tmp_path / "supervision.json", {"patient001_frame01": "box"})

    def run(out: str, *extra: str, recipe: str = "mixsup") -> list[str]:
        return [*base, "--recipe", recipe, "--out", str(tmp_path / out), *extra]

    _fails(run("a", "--supervision", str(manifest)), capsys, "no box weak-label file")
    _fails(run("b", "--simulate-weak"), capsys, "--simulate-weak needs")
    _fails(run("c", "--supervision", str(manifest), "--supervision-mix", "box=1.0"), capsys, "not both")
    _fails(run("d", "--supervision-mix", "box=0.5"), capsys, "--supervision-mix: mix shares must sum to 1")
    # DMPLS learns from scribbles only: a box-supervised training case is refused before training
    _fails(run("e", "--supervision", str(manifest), "--simulate-weak", recipe="dmpls"), capsys,
           "recipe 'dmpls' trains on scribble supervision only")
    assert not (tmp_path / "e" / "fold_1" / "train").exists()
