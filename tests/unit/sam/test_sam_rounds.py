"""Pseudo-label rounds end to end (fake tiny SAM) and the `scribmed pseudolabel` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import DecodeSpy, fake_backend

from scribmed.cli import main
from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import read_label_nifti
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.metrics import dc
from scribmed.sam.rounds import run_pseudo_label_rounds, select_round_cases
from scribmed.sam.stage_config import RoundsConfig


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory) -> Path:
    """Three cardiac phantom patients, one frame, two 64x64 slices each (acdc-h5 layout)."""
    out = tmp_path_factory.mktemp("phantom") / "acdc"
    return write_phantom_dataset("cardiac", "acdc-h5", out, n_patients=3, seed=3, size=(64, 64),
                                 slices=(2, 2), frames=("ED",))


def _quality(out: Path) -> dict:
    return json.loads((out / "quality.json").read_text())


def test_select_round_cases(phantom_root):
    ds = open_dataset("acdc-h5", phantom_root)
    sel = select_round_cases(ds, need_val=False)
    assert sel.train == ["patient001", "patient002", "patient003"] and sel.val == []
    sel = select_round_cases(ds, need_val=True)  # carved deterministically from the training patients
    assert len(sel.val) == 1 and len(sel.train) == 2 and not set(sel.val) & set(sel.train)
    with pytest.raises(DataError, match="both train and val"):
        select_round_cases(ds, ["patient001"], ["patient001"])
    with pytest.raises(DataError, match="not in the"):
        select_round_cases(ds, ["patient009"])


def test_zero_shot_round_end_to_end_and_cached_rerun(phantom_root, tmp_path):
    ds = open_dataset("acdc-h5", phantom_root)
    backend = fake_backend()
    spy = DecodeSpy(backend, blobs=True)
    out = tmp_path / "run"
    res = run_pseudo_label_rounds(ds, out, RoundsConfig(backend, rounds=0), eval_patients=["patient003"],
                                  progress=False)
    assert backend.encoder_calls == 6 and res.encoder_slices == 6  # 3 cases x 2 slices, once each
    assert len(spy.calls) == 6  # one decoder call per slice, all classes at once
    doc = _quality(out)
    assert [e["round"] for e in doc["rounds"]] == [0]
    entry = doc["rounds"][0]
    assert set(entry["dice"]) == {"RV", "Myo", "LV"} and entry["cases"] == 3
    assert entry["dice_by_subset"]["eval"]["cases"] == 1 and entry["prompts"]["negatives"] == "none"
    # the report's values are the Dice of the written files against the ground truth
    inter = total = 0
    for case in ds:
        pred = read_label_nifti(out / "round_0" / f"{case.case_id}.nii.gz").array
        assert pred.shape == case.label.shape
        assert entry["per_case"][case.case_id]["LV"] == pytest.approx(dc(pred == 3, case.label == 3))
        inter += int(((pred == 3) & (case.label == 3)).sum())
        total += int((pred == 3).sum() + (case.label == 3).sum())
    assert entry["dice"]["LV"] == pytest.approx(2 * inter / total)
    assert (out / "round_0" / "round.json").is_file() and (out / "run.json").is_file()
    # a second invocation (new backend instance, same weights): nothing recomputed
    again = fake_backend()
    spy2 = DecodeSpy(again, blobs=True)
    res2 = run_pseudo_label_rounds(open_dataset("acdc-h5", phantom_root), out, RoundsConfig(again, rounds=0),
                                   eval_patients=["patient003"], progress=False)
    assert again.encoder_calls == 0 and len(spy2.calls) == 0 and res2.quality == doc
    with pytest.raises(DataError, match="other settings"):
        run_pseudo_label_rounds(ds, out, RoundsConfig(fake_backend(), rounds=0), progress=False)  # other selection


def test_one_finetuning_round_end_to_end(phantom_root, tmp_path):
    pytest.importorskip("scribmed.sam.decoder_finetune")
    from scribmed.sam.finetune_config import FinetuneConfig

    ds = open_dataset("acdc-h5", phantom_root)
    backend = fake_backend()
    out = tmp_path / "run"
    cfg = FinetuneConfig(epochs=1, n_points=3, progress=False, validate_initial=False)
    kwargs = dict(train_patients=["patient001"], val_patients=["patient003"], progress=False)
    res = run_pseudo_label_rounds(ds, out, RoundsConfig(backend, rounds=1, finetune_config=cfg), **kwargs)
    assert backend.encoder_calls == 4  # train + val slices, once across both rounds
    doc = _quality(out)
    assert [e["round"] for e in doc["rounds"]] == [0, 1]
    assert all(e["cases"] == 1 for e in doc["rounds"])  # the pseudo-labelled (training) case
    r1 = doc["rounds"][1]
    assert r1["prompts"]["negatives"] == "neighbour" and r1["prompts"]["n_points"] == 3
    assert r1["decoder"] == "round_1/decoder/decoder_best.pt" and "best_val_dice" in r1
    assert res.decoders[0] is None and res.decoders[1].is_file()
    for case_id in ("patient001_frame01",):
        assert (out / "round_1" / f"{case_id}.nii.gz").is_file()
        assert (out / "round_1" / f"{case_id}_confidence.npz").is_file()
    for case_id in ("patient002_frame01", "patient003_frame01"):  # not selected / validation
        assert not (out / "round_1" / f"{case_id}.nii.gz").exists()
    # rerun: both rounds finished -> skipped, no encoder or decoder work
    again = fake_backend()
    spy = DecodeSpy(again)
    run_pseudo_label_rounds(ds, out, RoundsConfig(again, rounds=1, finetune_config=cfg), **kwargs)
    assert again.encoder_calls == 0 and spy.calls == [] and _quality(out) == doc


def test_cli_pseudolabel_zero_shot_with_patients(phantom_root, tmp_path, monkeypatch, capsys):
    import scribmed.networks.sam_registry as sb

    built = []

    def fake_build(name, checkpoint=None, device="cpu", **kw):
        assert name == "lite_medsam" and checkpoint is None
        b = fake_backend()
        DecodeSpy(b, blobs=True)
        built.append(b)
        return b

    monkeypatch.setattr(sb, "build_sam_backend", fake_build)
    out = tmp_path / "cli"
    argv = ["pseudolabel", "--layout", "acdc-h5", "--root", str(phantom_root), "--out", str(out),
            "--rounds", "0", "--patients", "patient001,patient003", "--n-points", "4", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| round | RV | Myo | LV | cases |" in printed and "| 0 (zero-shot) |" in printed
    doc = _quality(out)
    assert doc["rounds"][0]["cases"] == 2 and set(doc["rounds"][0]["per_case"]) == {
        "patient001_frame01", "patient003_frame01"}
    assert sorted(p.name for p in (out / "round_0").glob("*.nii.gz")) == [
        "patient001_frame01.nii.gz", "patient003_frame01.nii.gz"]
    assert built[0].encoder_calls == 4 and (out / "embeddings").is_dir()
    # a rerun reuses everything
    assert main(argv) == 0 and built[1].encoder_calls == 0
    # bad input: one line, exit 1
    bad = [a if a != "patient001,patient003" else "patient042" for a in argv]
    assert main(bad) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "patient042" in err and len(err.splitlines()) == 1
    assert main(argv[:-1] + ["--fold", "1"]) == 1
    assert "--split and --fold" in capsys.readouterr().err


def test_cli_pseudolabel_split_fold(phantom_root, tmp_path, monkeypatch, capsys):
    import scribmed.networks.sam_registry as sb
    from scribmed.data.split_files import save_split
    from scribmed.data.splits import make_kfold_split

    def fake_build(name, checkpoint=None, device="cpu", **kw):
        b = fake_backend()
        DecodeSpy(b, blobs=True)
        return b

    monkeypatch.setattr(sb, "build_sam_backend", fake_build)
    split = make_kfold_split(["patient001", "patient002", "patient003"], k=3, seed=0)
    path = save_split(split, tmp_path / "split.json")
    fold = split.fold(1)
    out = tmp_path / "cli"
    argv = ["pseudolabel", "--layout", "acdc-h5", "--root", str(phantom_root), "--out", str(out),
            "--split", str(path), "--fold", "2", "--rounds", "0", "--quiet"]
    assert main(argv) == 0
    doc = _quality(out)
    assert set(doc["rounds"][0]["per_case"]) == {f"{p}_frame01" for p in fold.train}  # train patients only
    run = json.loads((out / "run.json").read_text())
    assert run["selection"]["train"] == list(fold.train) and run["selection"]["val"] == list(fold.val)
    assert main(argv[:-3] + ["--fold", "7", "--quiet"]) == 1
    assert "fold" in capsys.readouterr().err


def test_run_folder_of_another_encoder_runtime_says_which_flag_resumes_it(tmp_path):
    import json

    from scribmed.sam.rounds import RUN_RECORD, _check_run_record

    record = {"backend": "lite_medsam", "encoder_cache_key": "lite_medsam-79d8-minmax256v1-openvino",
              "selection": {}, "rounds": 1, "zero_shot_prompts": {}, "finetuned_prompts": None,
              "finetune": {"lr": 1e-4}, "merge_priority": None}
    # a (version 1) record written before loss_resolution existed resumes as loss_resolution "full"
    (tmp_path / RUN_RECORD).write_text(json.dumps(record))
    _check_run_record(tmp_path, {**record, "finetune": {"lr": 1e-4, "loss_resolution": "full"}})
    with pytest.raises(DataError, match="finetune differ"):
        _check_run_record(tmp_path, {**record, "finetune": {"lr": 1e-4, "loss_resolution": "low"}})
    with pytest.raises(DataError, match=r"encoder_cache_key differ\) \(its encoder ran with the openvino runtime: "
                                        r"--sam-encoder-runtime openvino resumes it\)"):
        _check_run_record(tmp_path, {**record, "encoder_cache_key": "lite_medsam-79d8-minmax256v1",
                                     "finetune": {"lr": 1e-4, "loss_resolution": "full"}})


def test_cli_pseudolabel_shards_fill_the_cache_the_rounds_read(phantom_root, tmp_path, monkeypatch, capsys):
    """Two `--shard i/2` jobs encode disjoint halves into one cache; the rounds then encode nothing."""
    import scribmed.networks.sam_registry as sb

    built = []

    def fake_build(name, checkpoint=None, device="cpu", **kw):
        b = fake_backend()
        DecodeSpy(b, blobs=True)
        built.append(b)
        return b

    monkeypatch.setattr(sb, "build_sam_backend", fake_build)
    out = tmp_path / "run"
    argv = ["pseudolabel", "--layout", "acdc-h5", "--root", str(phantom_root), "--out", str(out),
            "--rounds", "0", "--quiet"]
    stats = []
    for shard in ("1/2", "2/2"):
        capsys.readouterr()
        assert main([*argv, "--shard", shard]) == 0
        stats.append(json.loads(capsys.readouterr().out.splitlines()[0]))
    assert [s["cases"] for s in stats] == [2, 1] and [s["misses"] for s in stats] == [2, 1]
    assert [b.encoder_calls for b in built] == [4, 2]  # 2 slices per case, each slice once
    assert not (out / "round_0").exists()  # a shard job only encodes
    assert main(argv) == 0
    assert built[-1].encoder_calls == 0  # every embedding came from the shards
    with pytest.raises(SystemExit):  # argparse: a bad value
        main([*argv, "--shard", "3/2"])
    assert "--shard must be I/N" in capsys.readouterr().err
