"""Every ``bash`` block of README.md and docs/*.md runs, at the smallest sizes.

docs/cluster.md has its own test (test_docs_cluster.py). Here each block runs in bash, in a scratch
folder that links the repository's ``bundles/``, ``benchmarks/`` and ``data_splits/``, with
``scribmed``, ``python``, ``torchrun``, ``make`` and ``pip`` recorded instead of started: bash
expands the block (variables, loops, quotes, continuation lines) and each recorded command then
runs in this process, in order; a new Python per command would spend the test importing torch and
MONAI. The substitutions, stated once:

* ``/data/ACDC`` is an ACDC-layout phantom of 17 patients, one frame each: two test and two
  validation patients of every fold of the ``acdc_5fold`` split, which names 100 (the pages pass
  ``--allow-missing``, as the public ACDC release of 80 patients needs), ``/data/new_scans`` a folder of three phantom ``*.nii.gz``
  images, ``/data/dicom_scans`` the same three images as DICOM series (one folder each),
  ``my_split.json`` a five-fold split of the phantom's patients; any other absolute path is
  a folder of the scratch directory, and every page runs in a scratch folder of its own;
* nnU-Net (``--recipe nnunet_pl``) trains one epoch of 2 iterations (``--epochs``,
  ``--iterations-per-epoch``, ``--val-iterations-per-epoch``, ``--num-workers 0``), predicts
  without mirroring (``--set mirror=false``), fingerprints and preprocesses in threads and draws no progress plot
  (conftest's ``nnunet_in_process``);
* training is 2 iterations of batch 2 at 32x32, validating every iteration (``--iterations``,
  ``--batch-size``, ``--size``, ``--val-interval`` and the bundles' ``iterations``, ``batch_size``,
  ``size``, ``val_interval``, also of a bundle evaluation, which reads the training config); a
  ``scribmed cv`` command without ``--fold``/``--folds`` runs fold 1; SAM is the suite's tiny
  stand-in (tests/fakes.py) with one decoder fine-tuning round of one epoch (``--rounds``,
  ``--sam-epochs``); CUDA devices are the CPU and a bundle's ``num_workers`` is 0;
* ``torchrun --nproc_per_node=N -m monai.bundle run`` runs the bundle on one process (the DDP
  overlay on two processes: tests/integration/bundles/test_bundles_samsp.py);
* ``python benchmarks/NAME.py ARGS`` is parsed by the script's own parser and not run (the
  benchmarks run on the real data for minutes to hours);
* ``make install`` is ``make -q install`` (the suite runs in the environment it installed);
  ``make demo`` and ``make test`` are ``make -n`` (their commands are the demo, which
  tests/integration/test_cli.py runs at small sizes, and this suite);
* ``pip install ./mypkg`` and the commands after it (docs/recipes.md's recipe package) are
  tests/integration/test_recipe_plugin.py, which installs that package into a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
from acdc_split_phantom import write_acdc_5fold_phantom
from doc_blocks import bash_blocks, recorded_calls
from torchrun_env import group_of_one

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "cluster.md")]
RECORDED = ("scribmed", "python", "torchrun", "make", "pip", "_block_end")

TRAIN_FLAGS = {"--iterations": "2", "--batch-size": "2", "--size": "32", "--val-interval": "1"}
SAM_FLAGS = {"--rounds": "1", "--sam-epochs": "1"}
NNUNET_FLAGS = {"--epochs": "1", "--iterations-per-epoch": "2", "--val-iterations-per-epoch": "1", "--num-workers": "0"}
BUNDLE_TRAIN_KEYS = {"--iterations": "2", "--batch_size": "2", "--size": "[32,32]", "--val_interval": "1"}
BUNDLE_WORKERS = {"--num_workers": "0"}


def page_blocks() -> list[tuple[str, int, str]]:
    """(page, block number, block) of every bash block of the pages."""
    return [(page.relative_to(REPO).as_posix(), i, block)
            for page in PAGES for i, block in enumerate(bash_blocks(page.read_text()), 1)]


def with_values(argv: list[str], values: dict[str, str], add: bool) -> list[str]:
    """``argv`` with each flag of ``values`` set to its value (appended when ``add`` and absent)."""
    out = list(argv)
    for flag, value in values.items():
        if flag in out:
            out[out.index(flag) + 1] = value
        elif add:
            out += [flag, value]
    return out


def small_cv(argv: list[str]) -> list[str]:
    """A ``scribmed`` command at the test's sizes (module docstring)."""
    if argv[:1] == ["cv"] and not (set(argv[1:2]) & {"merge", "status", "compare", "postprocess"}):
        sam_stage = bool({"samsp", "mixsup"} & set(argv))  # the recipes with a SAM stage
        if "nnunet_pl" in argv:  # nnU-Net's own schedule flags, and its predictor without mirroring
            argv = with_values(argv, NNUNET_FLAGS, add=True) + ["--set", "mirror=false"]
        else:
            argv = with_values(with_values(argv, TRAIN_FLAGS, add=True), SAM_FLAGS, add=sam_stage)
        if "--fold" not in argv and "--folds" not in argv:
            argv += ["--fold", "1"]
    if argv[:1] == ["demo"]:
        argv = with_values(argv, {**TRAIN_FLAGS, "--patients": "5"}, add=True)
    return [a.replace("cuda:1", "cpu").replace("cuda", "cpu") if a.startswith("cuda") else a for a in argv]


class Outcome:
    """What one recorded command did."""

    def __init__(self, command: list[str], code: int, out: str, err: str, seconds: float = 0.0) -> None:
        self.command, self.code, self.out, self.err, self.seconds = command, code, out, err, seconds

    def __repr__(self) -> str:
        return f"{shlex.join(self.command)} -> {self.code}\n{self.out[-1500:]}\n{self.err[-3000:]}"


def in_process(command: list[str], run: Callable[[], Optional[int]]) -> Outcome:
    start = time.perf_counter()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run() or 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return Outcome(command, code, out.getvalue(), err.getvalue(), time.perf_counter() - start)


class _Parsed(Exception):
    pass


def parse_benchmark(script: Path, args: list[str], monkeypatch) -> int:
    """Parse ``args`` with ``script``'s own argument parser, without running it (module docstring)."""
    real = argparse.ArgumentParser.parse_args

    def parse_only(self, args_=None, namespace=None):  # type: ignore[no-untyped-def]
        real(self, args_, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    try:
        runpy.run_path(str(script), run_name="__main__")
    except _Parsed:
        return 0
    finally:
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", real)
    raise AssertionError(f"{script.name} ran without parsing its arguments")


def bundle_run(args: list[str]) -> int:
    """``python -m monai.bundle SUBCOMMAND ARGS`` in this process (MONAI's entry point is ``fire``)."""
    import fire
    import monai.bundle.__main__ as entry

    configs = " ".join(args)
    if args[0] == "run" and "train.yaml" in configs:  # training, and evaluation with the training's config
        args = with_values(args, BUNDLE_TRAIN_KEYS, add=True)
    args = with_values(["cpu" if a.startswith("cuda") else a for a in args], BUNDLE_WORKERS, add=False)
    fire.Fire(getattr(entry, args[0]), command=args[1:])
    return 0


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """The phantom data the pages' paths point to, and the environment the blocks run in."""
    from scribmed.data.layouts import open_dataset, write_dataset
    from scribmed.data.nifti import write_nifti
    from scribmed.data.split_files import save_split
    from scribmed.data.splits import make_kfold_split

    base = tmp_path_factory.mktemp("docs_commands")
    acdc = write_acdc_5fold_phantom(base, size=(40, 40))
    dataset = open_dataset("acdc-h5", acdc)
    assert len(dataset.patients) == 17
    scans = base / "new_scans"
    scans.mkdir()
    for case in list(dataset)[:3]:
        write_nifti(scans / f"{case.case_id}.nii.gz", np.asarray(case.image), spacing=(5.0, 1.5, 1.5))
    dicom_scans = base / "dicom_scans"
    write_dataset("dicom", dicom_scans, [{"case_id": c.case_id, "patient_id": c.patient_id, "image": c.image,
                                          "spacing": (5.0, 1.5, 1.5)} for c in list(dataset)[:3]])
    split = save_split(make_kfold_split(dataset.patients, k=5, seed=0, name="my_split"), base / "my_split.json")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    return {"acdc": acdc, "scans": scans, "dicom_scans": dicom_scans, "split": split, "base": base, "env": env}


def page_folder(page: str, scratch: dict) -> Path:
    """The folder a page's blocks run in: links to the repository's shipped folders, the split file."""
    work = scratch["base"] / "pages" / page.replace("/", "_")
    work.mkdir(parents=True)
    for name in ("bundles", "benchmarks", "data_splits", "docs", "Makefile", "pyproject.toml", "constraints.txt",
                 ".venv"):
        if (REPO / name).exists():
            (work / name).symlink_to(REPO / name)
    (work / "my_split.json").symlink_to(scratch["split"])
    return work


def localise(block: str, scratch: dict) -> str:
    """The block with the pages' data paths pointing at the phantoms and other absolute paths at scratch."""
    block = block.replace("/data/new_scans", "\0SCANS\0").replace("/data/dicom_scans", "\0DICOM\0")
    block = re.sub(r"/data/ACDC(?=[\s/\"']|$)", "\0ACDC\0", block, flags=re.M)
    block = re.sub(r"(?<![\w.$/])/(data|scratch|shared|tmp|my)/", str(scratch["base"]) + r"/abs/\1/", block)
    return block.replace("\0SCANS\0", str(scratch["scans"])).replace("\0ACDC\0", str(scratch["acdc"])) \
        .replace("\0DICOM\0", str(scratch["dicom_scans"]))


def run_command(call: list[str], scratch: dict, monkeypatch) -> Optional[Outcome]:
    """One recorded command (module docstring); ``None`` for those another test runs."""
    from scribmed.cli import main

    name, args = call[0], call[1:]
    if name == "scribmed":
        argv = small_cv(args)
        return in_process(["scribmed", *argv], lambda: main(argv))
    if name == "python" and args[:2] == ["-m", "monai.bundle"]:
        return in_process(call, lambda: bundle_run(args[2:]))
    if name == "torchrun":
        module = args.index("-m")
        assert args[module + 1] == "monai.bundle", call
        for var, value in group_of_one().items():  # torchrun's environment for one process
            monkeypatch.setenv(var, value)
        try:
            return in_process(call, lambda: bundle_run(args[module + 2:]))
        finally:
            for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
                monkeypatch.delenv(var, raising=False)
    if name == "python" and args and args[0].startswith("benchmarks/"):
        return in_process(call, lambda: parse_benchmark(REPO / args[0], args[1:], monkeypatch))
    if name == "make":
        assert len(args) == 1 and args[0] in ("install", "demo", "test"), call
        # install: up to date (-q); demo and test: their commands as make prints them (-n), run elsewhere
        done = subprocess.run(["make", "-q" if args[0] == "install" else "-n", args[0]], cwd=REPO,
                              capture_output=True, text=True)
        return Outcome(call, done.returncode, done.stdout, done.stderr)
    if name == "pip":
        return None
    raise AssertionError(f"no rule for {shlex.join(call)}")


@pytest.fixture()
def fake_sam(monkeypatch):
    from fakes import fake_backend

    import scribmed.networks.sam_registry as registry

    monkeypatch.setattr(registry, "build_sam_backend", lambda name, **kw: fake_backend())


def run_page(page: str, scratch: dict, monkeypatch) -> tuple[list[Outcome], Path]:
    """Run the page's blocks as one script, in order (a variable set in one block holds in the next),
    in the page's own folder; every command must succeed. Returns the outcomes and the folder."""
    from conftest import nnunet_in_process

    work = page_folder(page, scratch)
    monkeypatch.chdir(work)
    nnunet_in_process(monkeypatch)  # the nnunet_pl commands (conftest says why)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    blocks = [b for p, _, b in page_blocks() if p == page]
    assert blocks, f"{page} has no bash block"
    script = "\n".join(localise(b, scratch) + "\n_block_end" for b in blocks)
    outcomes: list[Outcome] = []
    package_block = False  # a block from `pip install` on: test_recipe_plugin.py runs it
    for call in recorded_calls(script, RECORDED, scratch["env"], work):
        if call[0] == "_block_end":
            package_block = False
            continue
        package_block = package_block or call[0] == "pip"
        if package_block:
            continue
        outcome = run_command(call, scratch, monkeypatch)
        assert outcome is not None and outcome.code == 0, outcome
        print(f"{outcome.seconds:6.1f} s  {shlex.join(outcome.command)[:150]}")  # shown by pytest -s
        outcomes.append(outcome)
    return outcomes, work


def test_every_page_with_commands_is_run_here():
    """A new page with bash blocks is run by a test below (or by test_docs_cluster.py)."""
    with_blocks = sorted({p for p, _, _ in page_blocks()})
    assert with_blocks == sorted(PAGES_RUN), with_blocks


PAGES_RUN = ["README.md", "docs/benchmarks.md", "docs/bundles.md", "docs/cross_validation.md", "docs/recipes.md", "docs/sam.md"]


@pytest.mark.usefixtures("fake_sam")
def test_readme(scratch, monkeypatch):
    outcomes, work = run_page("README.md", scratch, monkeypatch)
    said = "\n".join(o.out + o.err for o in outcomes)
    assert "merged 1 of 5 folds" in said and '"cases": 3' in said
    assert "-m scribmed demo" in said and "-m pytest" in said  # the quick start's make targets
    run = work / "runs" / "dmpls_acdc"
    for name in ("run.json", "split.json", "fold_1/train/best.pt", "fold_1/fold.json", "fold_1/evaluation/summary.json",
                 "summary.md"):
        assert (run / name).exists(), name
    assert sorted(p.name for p in (work / "runs" / "new_preds").iterdir()) == \
        sorted([p.name for p in scratch["scans"].iterdir()] + ["predictions.json"])
    assert (work / "runs" / "acdc_eval" / "summary.json").exists()
    assert sorted(p.name for p in (work / "runs" / "new_segs").iterdir()) == sorted(
        [f"{p.name[:-len('.nii.gz')]}.dcm" for p in scratch["scans"].iterdir()] + ["predictions.json"])  # one DICOM-SEG per series


@pytest.mark.usefixtures("fake_sam")
@pytest.mark.parametrize("page", ["docs/benchmarks.md", "docs/bundles.md", "docs/cross_validation.md", "docs/recipes.md", "docs/sam.md"])
def test_docs_page(page, scratch, monkeypatch):
    outcomes, _ = run_page(page, scratch, monkeypatch)
    assert outcomes
