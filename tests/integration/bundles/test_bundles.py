"""The DMPLS MONAI bundles (bundles/dmpls_{acdc,mscmr,chaos}) run as users run them, on tiny phantoms.

Each bundle's train, evaluate-overlay and inference workflows run through ``monai.bundle run``'s
command line (64x64 slices, 4 iterations), in the test's process through the ``fire`` entry point
of ``python -m monai.bundle`` (a new Python would spend most of each run importing torch and
MONAI; ``python -m monai.bundle run`` itself runs as a process in ``test_recipe_plugin.py``). The
DDP overlay runs in-process in a torchrun group of one (gloo); the overlays of the SAM-SP and
MixSup bundles run under ``torchrun`` with two CPU processes. MONAI's property checks run
in-process.
"""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path

import pytest
import torch
from ensemble_reference import ensemble_label_map
from torchrun_env import group_of_one

from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import read_label_nifti
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.runtime.files import file_sha256

REPO = Path(__file__).resolve().parents[3]
BUNDLES = REPO / "bundles"
NAMES = ("dmpls_acdc", "dmpls_mscmr", "dmpls_chaos")
TINY = ["--iterations", "4", "--val_interval", "2", "--batch_size", "2", "--size", "64", "--progress", "False"]


def _cfg(name: str, *files: str) -> str:
    paths = [str(BUNDLES / name / "configs" / f) for f in files]
    return paths[0] if len(paths) == 1 else "[" + ",".join(f"'{p}'" for p in paths) + "]"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, dict]:
    """One 3-patient phantom per bundle, with the split and layout its runs use."""
    root = tmp_path_factory.mktemp("bundle_data")
    tiny = dict(seed=0, size=64, slices=(3, 3))
    acdc = write_phantom_dataset("cardiac", "acdc-h5", root / "acdc", 3, **tiny)
    mscmr = write_phantom_dataset("cardiac", "mscmr", root / "mscmr", 3, include_test=True, **tiny)
    chaos = write_phantom_dataset("abdominal", "chaos-npz", root / "chaos", 3, modalities=("T1",), **tiny)

    def split(name: str, ids: list[str]) -> str:
        path = root / f"{name}_split.json"
        path.write_text(json.dumps({"name": name, "folds": [{"train": [ids[0]], "val": [ids[1]], "test": [ids[2]]}]}))
        return str(path)

    return {
        "dmpls_acdc": {"dir": acdc, "layout": "acdc-h5",
                       "args": ["--split_file", split("acdc", ["patient001", "patient002", "patient003"])]},
        # the shipped data_splits/mscmr.json, restricted to the three phantom subjects
        "dmpls_mscmr": {"dir": mscmr, "layout": "mscmr", "args": ["--allow_missing", "True"]},
        "dmpls_chaos": {"dir": chaos, "layout": "chaos-npz",
                        "args": ["--split_file", split("chaos", ["patient01", "patient02", "patient03"])]},
    }


def _run_here(args: list[str], cwd: Path, monkeypatch) -> None:
    """``python -m monai.bundle run ARGS`` in this process: the module's ``fire`` entry point with
    the same arguments (the bundle's logging.conf is left out: it would rebind the root logger)."""
    import fire
    from monai.bundle import run

    monkeypatch.chdir(cwd)
    fire.Fire({"run": run}, command=["run", *args, "--logging_file", "False"])


def _overrides(data: dict, name: str, out: Path) -> list[str]:
    d = data[name]
    return ["--dataset_dir", str(d["dir"]), "--fold", "1", "--output_dir", str(out), *d["args"]]


# ------------------------------------------------------------------------------------ layout


@pytest.mark.parametrize("name", NAMES)
def test_bundle_files_and_metadata(name: str) -> None:
    root = BUNDLES / name
    for rel in ("LICENSE", "configs/metadata.json", "configs/train.yaml", "configs/inference.yaml",
                "configs/evaluate.yaml", "configs/multi_gpu_train.yaml", "docs/README.md", "large_files.yml"):
        assert (root / rel).is_file(), rel
    assert "Apache License" in (root / "LICENSE").read_text() and "Version 2.0" in (root / "LICENSE").read_text()
    meta = json.loads((root / "configs/metadata.json").read_text())
    for key in ("schema", "version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                "required_packages_version", "name", "task", "description", "authors", "copyright",
                "data_source", "data_type", "image_classes", "label_classes", "pred_classes",
                "eval_metrics", "intended_use", "references", "network_data_format"):
        assert key in meta, key
    assert meta["version"] in meta["changelog"]
    assert any("Luo" in r and "MICCAI 2022" in r for r in meta["references"])
    image = meta["network_data_format"]["inputs"]["image"]
    assert (image["modality"], image["num_channels"], image["spatial_shape"], image["value_range"]) == ("MR", 1, [256, 256], [0, 1])
    pred = meta["network_data_format"]["outputs"]["pred"]  # what inference writes: uint8 label maps
    n = 5 if name == "dmpls_chaos" else 4
    assert (pred["format"], pred["num_channels"], pred["dtype"], pred["value_range"]) == ("labels", 1, "uint8", [0, n - 1])
    assert sorted(pred["channel_def"]) == [str(i) for i in range(n)] and pred["channel_def"]["0"] == "background"
    for f in ("train.yaml", "inference.yaml", "evaluate.yaml", "multi_gpu_train.yaml"):
        assert "SECURITY" in (root / "configs" / f).read_text(), f


# ------------------------------------------------------------------------- MONAI properties


def _workflow(name: str, data: dict, tmp_path: Path, config: str, workflow_type: str, **extra):
    from monai.bundle import ConfigWorkflow

    d = data[name]
    args = dict(zip(d["args"][::2], d["args"][1::2]))
    over = {k.lstrip("-"): (v == "True" if v in ("True", "False") else v) for k, v in args.items()}
    return ConfigWorkflow(
        config_file=str(BUNDLES / name / "configs" / config), workflow_type=workflow_type, logging_file=False,
        dataset_dir=str(d["dir"]), output_dir=str(tmp_path / "run"), size=64, progress=False, **over, **extra,
    )


@pytest.mark.parametrize("name", NAMES)
def test_check_properties(name: str, data, tmp_path, restore_torch_flags) -> None:
    train = _workflow(name, data, tmp_path, "train.yaml", "train")
    train.initialize()
    assert train.check_properties() == []
    assert type(train.trainer).__name__ == "DMPLSTrainer" and train.max_epochs == 600  # ceil(60000 / 100)
    assert type(train.evaluator).__name__ == "VolumeDiceEvaluator"
    # validation uses the fold's val patients only; training its train patients
    fold = train.parser.get_parsed_content("fold_cases")
    assert {c.patient_id for c in train.evaluator.cases} == {c.patient_id for c in fold["val"]}
    assert not {c.patient_id for c in fold["train"]} & {c.patient_id for c in fold["val"] + fold["test"]}
    # inference needs weights: an untrained network's state dict stands in for a checkpoint
    from scribmed.networks.unet_dual import DualBranchUNet

    ckpt = tmp_path / "weights.pt"
    torch.save(DualBranchUNet(1, train.parser.get_parsed_content("num_classes")).state_dict(), ckpt)
    infer = _workflow(name, data, tmp_path, "inference.yaml", "inference", ckpt_path=str(ckpt))
    infer.initialize()
    assert infer.check_properties() == []


def test_max_epochs_must_agree_with_iterations(data, tmp_path, restore_torch_flags) -> None:
    wf = _workflow("dmpls_acdc", data, tmp_path, "train.yaml", "train", **{"train#trainer#max_epochs": 7})
    wf.initialize()
    with pytest.raises(RuntimeError) as err:  # MONAI wraps the factory's ValueError
        wf.parser.get_parsed_content("train#trainer")
    assert isinstance(err.value.__cause__, ValueError) and "max_epochs=7 disagrees" in str(err.value.__cause__)


# ----------------------------------------------------------------------- the real commands


def _check_training(out: Path, world: int = 1) -> None:
    for f in ("best.pt", "last.pt", "history.json", "checkpoints.json"):
        assert (out / f).is_file(), f
    last = torch.load(out / "last.pt", weights_only=True)
    best = torch.load(out / "best.pt", weights_only=True)
    assert last["trainer"]["iteration"] == 4 and last["config"]["size"] == [64, 64]
    assert len(last["rng"]) == world
    assert best["val_mean_dice"] is not None and 0.0 <= best["val_mean_dice"] <= 1.0
    history = json.loads((out / "history.json").read_text())
    assert [e["iteration"] for e in history["epochs"]] == [2, 4]
    # the run ends with the model-zoo file: a copy of the selected checkpoint
    assert (out / "models" / "model.pt").read_bytes() == (out / "best.pt").read_bytes()


@pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")  # the subprocess runs set PYTHONWARNINGS
@pytest.mark.parametrize("name", NAMES)
def test_train_evaluate_infer(name: str, data, tmp_path, monkeypatch, restore_torch_flags) -> None:
    out = tmp_path / "fold_1"
    base = _overrides(data, name, out)
    _run_here(["--config_file", _cfg(name, "train.yaml"), *base, *TINY], tmp_path, monkeypatch)
    _check_training(out)

    # evaluate overlay: the fold's test cases with best.pt; the summary names that checkpoint
    _run_here(["--config_file", _cfg(name, "train.yaml", "evaluate.yaml"), *base, "--size", "64", "--progress",
               "False"], tmp_path, monkeypatch)
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    best_iteration = torch.load(out / "best.pt", weights_only=True)["trainer"]["iteration"]
    assert summary["checkpoint"].startswith(f"best.pt (recipe dmpls, iteration {best_iteration}, val mean Dice")
    assert file_sha256(out / "best.pt") in summary["checkpoint"]
    dataset = open_dataset(data[name]["layout"], data[name]["dir"])
    test_ids = [c.case_id for c in dataset if c.patient_id in _test_patients(name, dataset)]
    assert summary["n_cases"] == len(test_ids)
    assert sorted(p.name for p in (out / "evaluation" / "predictions").iterdir()) == sorted(f"{c}.nii.gz" for c in test_ids)
    record = json.loads((out / "fold.json").read_text())
    assert (record["fold"], record["checkpoint"], record["checkpoint_policy"]) == (1, "best.pt", "best")
    assert record["checkpoint_sha256"] == file_sha256(out / "best.pt")
    # the folds of bundle runs merge like the cross-validation runner's
    from scribmed.crossval.runner import merge_folds

    merged = json.loads(merge_folds(tmp_path).read_text())
    assert merged["folds_merged"] == [1] and merged["pooled"]["n_cases"] == len(test_ids)

    # inference on every case of dataset_dir with an explicit checkpoint
    preds = tmp_path / "preds"
    _run_here(["--config_file", _cfg(name, "inference.yaml"), *base, "--size", "64", "--progress", "False",
               "--predict", "all", "--ckpt_path", str(out / "last.pt"), "--prediction_dir", str(preds)], tmp_path,
              monkeypatch)
    assert sorted(p.name for p in preds.iterdir()) == sorted(f"{c}.nii.gz" for c in dataset.case_ids)
    for case in dataset:
        pred = read_label_nifti(preds / f"{case.case_id}.nii.gz", "prediction").array
        assert pred.shape == case.image.shape  # the reference grid (MSCMR train cases have no label)
        assert set(pred.ravel().tolist()) <= set(dataset.class_map.names)


def _test_patients(name: str, dataset) -> set[str]:
    if name == "dmpls_mscmr":
        return {p for p in dataset.patients if p == "subject3"}  # the phantom's TestSet subject
    return {sorted(dataset.patients)[2]}


@pytest.fixture(scope="module")
def acdc_run(data, tmp_path_factory) -> Path:
    """One tiny ACDC bundle training run shared by the tests below (read-only for them)."""
    from conftest import torch_flags_kept

    root = tmp_path_factory.mktemp("acdc_run")
    out = root / "run"
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(), torch_flags_kept():
        warnings.filterwarnings("ignore", "parsing config_file", UserWarning)
        _run_here(["--config_file", _cfg("dmpls_acdc", "train.yaml"), *_overrides(data, "dmpls_acdc", out), *TINY],
                  root, mp)
    return out


def test_bundle_training_equals_train_dmpls(data, acdc_run, tmp_path) -> None:
    """The bundle only wires the engine: same seed and settings give the weights train_dmpls gives."""
    from scribmed.bundles.locate import fold_case_lists
    from scribmed.recipes.dmpls.config import DMPLSConfig
    from scribmed.recipes.dmpls.trainer import train_dmpls

    out = acdc_run
    d = data["dmpls_acdc"]
    dataset = open_dataset(d["layout"], d["dir"])
    cases = fold_case_lists(dataset, d["args"][1], 1)
    cfg = DMPLSConfig(iterations=4, epoch_length=2, batch_size=2, size=(64, 64), progress=False)
    train_dmpls(cases["train"], cases["val"], dataset.class_map, tmp_path / "engine", cfg)
    a = torch.load(out / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "engine" / "last.pt", weights_only=True)
    assert a["config"] == b["config"]
    assert a["network"].keys() == b["network"].keys()
    assert all(torch.equal(a["network"][k], b["network"][k]) for k in a["network"])
    assert a["best"] == b["best"]


def test_existing_run_is_refused_then_resumed(data, acdc_run, restore_torch_flags) -> None:
    out = acdc_run
    tmp_path = out.parent  # _workflow writes to tmp_path / "run"
    digest = file_sha256(out / "last.pt")
    tiny = dict(iterations=4, val_interval=2, batch_size=2)
    wf = _workflow("dmpls_acdc", data, tmp_path, "train.yaml", "train", **tiny)
    wf.initialize()
    with pytest.raises(RuntimeError) as err:  # MONAI wraps the DataError raised by the expression
        wf.run()
    assert isinstance(err.value.__cause__, DataError) and "already holds a training run" in str(err.value.__cause__)
    wf = _workflow("dmpls_acdc", data, tmp_path, "train.yaml", "train", resume=True, **tiny)
    wf.initialize()
    wf.run()  # finished run: restored, not trained again
    assert file_sha256(out / "last.pt") == digest
    changed = _workflow("dmpls_acdc", data, tmp_path, "train.yaml", "train", resume=True, **{**tiny, "lr": 0.02})
    changed.initialize()
    with pytest.raises(RuntimeError) as err:
        changed.run()
    assert isinstance(err.value.__cause__, DataError) and "configuration changed" in str(err.value.__cause__)


@pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")
def test_ddp_overlay_in_a_torchrun_group_of_one(data, tmp_path, monkeypatch, restore_torch_flags, one_thread) -> None:
    """The DDP overlay as ``torchrun --nproc_per_node=1`` runs it: in this process, with torchrun's
    environment for one process, so the overlay joins a gloo group of one, trains the
    DistributedDataParallel-wrapped network and leaves the group. The same overlay machinery
    (``init_distributed``, ``reseed_rank``, ``run_training``, ``cleanup_distributed``) runs with two
    real gloo ranks under torchrun in test_bundles_samsp.py, and a DMPLS fold with two ranks in
    tests/cluster/test_slurm_cluster.py. One intra-op thread, as torchrun's ranks had."""
    import torch.distributed as dist

    for var, value in group_of_one().items():
        monkeypatch.setenv(var, value)
    out = tmp_path / "ddp"
    _run_here(["--config_file", _cfg("dmpls_acdc", "train.yaml", "multi_gpu_train.yaml"),
               *_overrides(data, "dmpls_acdc", out), *TINY], tmp_path, monkeypatch)
    _check_training(out, world=1)
    assert not dist.is_initialized()  # the overlay's finalize left the group


# ------------------------------------------- model.pt: its size, TorchScript export, the CPU time limit


@pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")
def test_inference_takes_the_checkpoint_size_and_refuses_another(data, acdc_run, tmp_path, monkeypatch) -> None:
    """inference.yaml's defaults: output_dir/models/model.pt at the size it was trained at (64, not 256)."""
    base = [*_overrides(data, "dmpls_acdc", acdc_run), "--progress", "False", "--device_name", "cpu"]
    preds = tmp_path / "preds"
    _run_here(["--config_file", _cfg("dmpls_acdc", "inference.yaml"), *base, "--prediction_dir", str(preds)],
              tmp_path, monkeypatch)
    assert sorted(p.name for p in preds.iterdir()) == ["patient003_frame01.nii.gz", "patient003_frame15.nii.gz"]
    with pytest.raises(RuntimeError) as err:  # MONAI wraps the DataError raised when the workflow runs
        _run_here(["--config_file", _cfg("dmpls_acdc", "inference.yaml"), *base, "--size", "256",
                   "--prediction_dir", str(tmp_path / "other")], tmp_path, monkeypatch)
    msg = str(err.value.__cause__)
    assert isinstance(err.value.__cause__, DataError) and "\n" not in msg
    assert msg.startswith(str(acdc_run / "models" / "model.pt")) and "trained at 64x64" in msg and "256x256" in msg


@pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")
def test_inference_ensemble_and_mirroring_keys(data, acdc_run, tmp_path, monkeypatch) -> None:
    """``--ensemble [ckpt, ckpt] --mirror true``: the argmax of the mean softmax over both checkpoints
    and each slice's four flips, computed here independently of scribmed's inference code."""
    from scribmed.networks.unet_dual import DualBranchUNet

    other = torch.load(acdc_run / "last.pt", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    other["network"] = {k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
                        for k, v in other["network"].items()}
    torch.save(other, tmp_path / "other.pt")
    ckpts = [str(acdc_run / "models" / "model.pt"), str(tmp_path / "other.pt")]
    preds = tmp_path / "preds"
    _run_here(["--config_file", _cfg("dmpls_acdc", "inference.yaml"), *_overrides(data, "dmpls_acdc", acdc_run),
               "--progress", "False", "--device_name", "cpu", "--amp", "False", "--prediction_dir", str(preds),
               "--ensemble", f"$[{ckpts[0]!r}, {ckpts[1]!r}]", "--mirror", "True"], tmp_path, monkeypatch)
    networks = []
    for ckpt in ckpts:
        net = DualBranchUNet(in_channels=1, num_classes=4)
        net.load_state_dict(torch.load(ckpt, weights_only=True)["network"])
        networks.append(net.eval())
    d = data["dmpls_acdc"]
    for case in open_dataset(d["layout"], d["dir"]):
        if case.patient_id != "patient003":
            continue
        expected = ensemble_label_map(networks, case.image, (64, 64), mirror=True)
        written = read_label_nifti(preds / f"{case.case_id}.nii.gz", "prediction").array
        assert written.shape == case.image.shape and (written == expected).all()


def _readme_ckpt_export() -> list[str]:
    """The ckpt_export command of bundles/dmpls_acdc/docs/README.md, as words."""
    readme = (BUNDLES / "dmpls_acdc" / "docs" / "README.md").read_text()
    block = readme.split("## TorchScript export")[1].split("```bash\n")[1].split("```")[0]
    return shlex.split(block.replace("\\\n", " "))


@pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # ignored as the subprocess's PYTHONWARNINGS did
def test_readme_ckpt_export_gives_torchscript_equal_to_the_eager_network(acdc_run, tmp_path, monkeypatch) -> None:
    """The README's `python -m monai.bundle ckpt_export`, on the trained model.pt, through the
    module's ``fire`` entry point in this process (like :func:`_run_here`)."""
    import fire
    from monai.bundle import ckpt_export

    from scribmed.bundles.checkpoints import load_weights
    from scribmed.networks.unet_dual import DualBranchUNet

    words = _readme_ckpt_export()
    assert words[:4] == ["python", "-m", "monai.bundle", "ckpt_export"]
    paths = {"runs/dmpls_acdc/fold_1/models/model.ts": str(tmp_path / "model.ts"),
             "runs/dmpls_acdc/fold_1": str(acdc_run), "bundles/dmpls_acdc": str(BUNDLES / "dmpls_acdc")}
    for old, new in paths.items():
        words = [w.replace(old, new) for w in words]
    monkeypatch.chdir(tmp_path)
    fire.Fire({"ckpt_export": ckpt_export}, command=words[3:])
    extra = {"metadata.json": ""}
    scripted = torch.jit.load(str(tmp_path / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == json.loads(
        (BUNDLES / "dmpls_acdc" / "configs" / "metadata.json").read_text())["version"]
    eager = load_weights(DualBranchUNet(1, 4), acdc_run / "models" / "model.pt")
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(scripted.eval()(x), eager(x))


@pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")
def test_cpu_time_limit_stops_a_bundle_run(data, tmp_path, monkeypatch, restore_torch_flags) -> None:
    """train.yaml's max_cpu_hours: the run stops after its first iterations with one line."""
    from scribmed.training.time_estimate import TrainingTooLong

    out = tmp_path / "fold_1"
    args = ["--config_file", _cfg("dmpls_acdc", "train.yaml"), *_overrides(data, "dmpls_acdc", out),
            "--iterations", "2", "--val_interval", "2", "--batch_size", "2", "--size", "64", "--progress", "False",
            "--device_name", "cpu", "--max_cpu_hours", "1e-9"]
    with pytest.raises(RuntimeError) as err:  # MONAI wraps the error raised by the run expression
        _run_here(args, tmp_path, monkeypatch)
    msg = str(err.value.__cause__)
    assert isinstance(err.value.__cause__, TrainingTooLong) and "\n" not in msg
    assert "over the 1e-09 h limit" in msg and msg.endswith("--max_cpu_hours 0 to go on")
    assert not (out / "models").exists()
