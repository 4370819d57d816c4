"""The benchmarks' data folder (benchmarks/data_root.py): --data-root DIR, else $SCRIBMED_DATA, else one error line."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NO_DATA = ("error: no data folder: pass --data-root DIR or set SCRIBMED_DATA "
           "(a folder holding ACDC/, MSCMR/, CHAOS_T2/, DSB2018/)")


@pytest.fixture()
def data_root():
    spec = importlib.util.spec_from_file_location("data_root", REPO / "benchmarks" / "data_root.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse(mod, argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    mod.add_data_root(ap, ("ACDC",))
    return ap.parse_args(argv)


def test_flag_then_environment_then_one_error_line(data_root, tmp_path, monkeypatch):
    (tmp_path / "ACDC").mkdir()
    monkeypatch.delenv("SCRIBMED_DATA", raising=False)
    assert data_root.dataset_dir(parse(data_root, ["--data-root", str(tmp_path)]), "ACDC") == tmp_path / "ACDC"
    with pytest.raises(SystemExit) as err:
        data_root.dataset_dir(parse(data_root, []), "ACDC")
    assert str(err.value) == NO_DATA
    monkeypatch.setenv("SCRIBMED_DATA", str(tmp_path))
    assert data_root.dataset_dir(parse(data_root, []), "ACDC") == tmp_path / "ACDC"
    with pytest.raises(SystemExit, match=rf"^error: {tmp_path / 'DSB2018'}: not found"):
        data_root.dataset_dir(parse(data_root, []), "DSB2018")
    assert data_root.dataset_dir(parse(data_root, []), "DSB2018", required=False) is None
    with pytest.raises(SystemExit, match=r"data folder \(--data-root\) not found"):
        data_root.dataset_dir(parse(data_root, ["--data-root", str(tmp_path / "none")]), "ACDC")


def run(*args: str, env_data: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SCRIBMED_DATA"}
    if env_data is not None:
        env["SCRIBMED_DATA"] = env_data
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_scripts_help_without_data_and_stop_before_work(tmp_path):
    done = run("benchmarks/annotation_cost.py", "--help")
    assert done.returncode == 0 and "--data-root DIR" in done.stdout
    out = tmp_path / "out"
    done = run("benchmarks/annotation_cost.py", "--out", str(out))
    assert done.returncode == 1 and done.stderr.strip() == NO_DATA and not out.exists()
    done = run("benchmarks/instance_recipes.py", "--out", str(out), env_data=str(tmp_path))
    assert done.returncode == 1 and not out.exists()
    missing = f"error: {tmp_path / 'DSB2018'}: not found (the data folder holds no DSB2018/)"
    assert done.stderr.strip().splitlines() == [missing]
    done = run("benchmarks/dmpls_parity.py", "--table", "--out", str(out))  # the table of finished runs needs no data
    assert done.returncode == 0, done.stderr
