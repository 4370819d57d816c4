"""A built wheel works outside the source tree: shipped splits and bundles come with it.

Builds the wheel (no build isolation: the test environment's setuptools), installs it with
``--no-deps`` into a fresh virtual environment that sees the test environment's packages, and
runs the CLI from a folder outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("wheel")
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    source = base / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", base / "dist", source],
         cwd=base)
    wheel = next((base / "dist").glob("scribmed-*.whl"))
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)  # the test environment's pip installs
    py = venv / "bin" / "python"
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base).stdout.strip())
    # the test environment's packages (torch, MONAI, ...) behind the fresh venv's own
    (purelib / "_scribmed_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "-q", wheel], cwd=base)
    outside = base / "elsewhere"
    outside.mkdir()
    return {"wheel": wheel, "py": py, "scribmed": venv / "bin" / "scribmed", "cwd": outside}


def test_wheel_ships_splits_and_bundles(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert "scribmed/_shipped/data_splits/acdc_5fold.json" in names
    assert "scribmed/_shipped/bundles/dmpls_acdc/configs/train.yaml" in names
    assert not any("/runs/" in n or "__pycache__" in n for n in names)


def test_installed_package_is_not_the_source_tree(installed):
    where = _run([installed["py"], "-c", "import scribmed, scribmed.runtime.shipped as s; print(scribmed.__file__); "
                  "print(s.shipped_dir('bundles'))"], cwd=installed["cwd"]).stdout.split()
    assert not Path(where[0]).is_relative_to(REPO) and "_shipped" in where[1]


def test_data_check_with_a_shipped_split_by_name(installed, acdc_root):
    out = _run([installed["scribmed"], "data", "check", "--layout", "acdc-h5", "--root", acdc_root,
                "--split", "acdc_5fold", "--allow-missing", "--quiet"], cwd=installed["cwd"]).stdout
    summary = json.loads(out)
    assert summary["split"]["name"] and summary["split"]["folds"] == 5
    assert summary["split"]["missing_patients_dropped"]  # patients 081-100 are not in ../shared/data


def test_export_and_initialise_the_train_workflow(installed, tmp_path):
    from scribmed.data.phantoms import write_phantom_dataset

    data = write_phantom_dataset("cardiac", "acdc-h5", tmp_path / "acdc", 3, seed=0, size=64, slices=(2, 2))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"name": "tiny", "folds": [
        {"train": ["patient001"], "val": ["patient002"], "test": ["patient003"]}]}))
    dest = installed["cwd"] / "my_bundle"
    _run([installed["scribmed"], "bundle", "export", "dmpls_acdc", dest], cwd=installed["cwd"])
    script = f"""
from monai.bundle import ConfigWorkflow
wf = ConfigWorkflow(config_file={str(dest / 'configs' / 'train.yaml')!r}, meta_file={str(dest / 'configs' / 'metadata.json')!r},
                    workflow_type="train", bundle_root={str(dest)!r}, dataset_dir={str(data)!r},
                    split_file={str(split)!r}, size=64, progress=False, logging_file=False)
wf.initialize()
assert wf.check_properties() == [], wf.check_properties()
print(type(wf.trainer).__name__, wf.parser.get_parsed_content("output_dir"))
"""
    out = _run([installed["py"], "-c", script], cwd=installed["cwd"]).stdout.split()
    assert out[-2] == "DMPLSTrainer" and out[-1] == "runs/dmpls_acdc/fold_1"
