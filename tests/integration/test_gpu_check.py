"""benchmarks/gpu_check.py in --quick mode, as a subprocess: JSON with the expected keys and the table.

On a CPU the check says it ran a reduced version: :func:`check_cpu_quick_run` is asserted on the
run of docs/cluster.md's GPU-check command (``test_docs_cluster.py``), the one CPU run of the
suite. On a GPU (``cuda`` test) it measures AMP on and off.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
SECTIONS = ("dmpls", "samsp", "sam_encoder", "sam_decoder_finetune")


def run_check(tmp_path: Path, device: str) -> tuple[dict, str]:
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", device, "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def check_report(report: dict, precisions: list[str]) -> None:
    assert report["benchmark"] == "gpu_check" and report["quick"] is True and report["reduced"] is True
    assert report["precisions"] == precisions
    for key in ("device", "device_name", "amp_auto", "peak_memory_mb", "peak_memory_kind", "settings", "elapsed_s",
                "torch", *SECTIONS):
        assert key in report, key
    for part in ("dmpls", "samsp"):
        assert sorted(report[part]) == sorted(precisions)
        for entry in report[part].values():
            assert entry["s_per_iteration"] > 0 and entry["peak_memory_mb"] > 0 and entry["iterations_timed"] >= 1
    assert "lite_medsam" in report["sam_encoder"] and "lite_medsam" in report["sam_decoder_finetune"]
    for p in precisions:
        enc = report["sam_encoder"]["lite_medsam"][p]
        assert enc["slices_per_s"] > 0 and enc["embedding_dtype"] == "float32" and enc["peak_memory_mb"] > 0
        ft = report["sam_decoder_finetune"]["lite_medsam"][p]
        assert ft["s_per_step"] > 0 and ft["steps_timed"] >= 1
    assert report["peak_memory_mb"] > 0


def check_cpu_quick_run(report: dict, stdout: str) -> None:
    """A ``--quick`` run on the CPU: reduced and saying so, fp32 only, and the fold estimate adds up."""
    check_report(report, ["fp32"])
    assert report["device"] == "cpu" and report["amp_auto"] == "fp32" and report["bf16_supported"] is None
    assert report["peak_memory_kind"].startswith("cpu_peak_rss")
    assert "REDUCED" in stdout and "| DMPLS s/iteration" in stdout and "SAM encoder lite_medsam slices/s" in stdout
    # the fold estimate is the documented sum of the measurements
    est, f = report["fold_estimate"], report["fold_estimate"]["assumptions"]
    assert est["dmpls_hours"] == pytest.approx(f["iterations"] * report["dmpls"]["fp32"]["s_per_iteration"] / 3600)
    enc = report["sam_encoder"]["lite_medsam"]["fp32"]["slices_per_s"]
    step = report["sam_decoder_finetune"]["lite_medsam"]["fp32"]["s_per_step"]
    want = ((f["train_slices"] + f["val_slices"]) / enc + f["rounds"] * f["epochs"] * f["train_slices"] * step
            + f["iterations"] * report["samsp"]["fp32"]["s_per_iteration"]) / 3600
    assert est["samsp_lite_medsam_hours"] == pytest.approx(want)
    assert "expected wall time of one ACDC fold" in stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_quick_check_on_cuda_measures_amp_on_and_off(tmp_path):
    report, stdout = run_check(tmp_path, "cuda")
    auto = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    check_report(report, ["fp32", auto])
    assert report["device"].startswith("cuda") and report["amp_auto"] == auto
    assert report["peak_memory_kind"] == "cuda_max_memory_allocated"
    assert report["dmpls"][auto]["grad_scaler"] == (auto == "fp16") and report["dmpls"]["fp32"]["grad_scaler"] is False
    assert report["dmpls"][auto]["pin_memory"] and report["dmpls"][auto]["loader_workers"] >= 0
    assert f"{auto} | peak MB ({auto})" in stdout and "REDUCED" not in stdout
