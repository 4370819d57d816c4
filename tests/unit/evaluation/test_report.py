"""Aggregation, per_case.csv / summary.json / box plot / markdown, atomic writes."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

import scribmed.evaluation.report as R
from scribmed.metrics import CaseResult, ClassResult, evaluate_case
from scribmed.evaluation.report import (
    CSV_COLUMNS,
    read_report,
    summarize,
    summarize_folds,
    summary_markdown,
    write_report,
)


def _case(cid: str, rv: tuple, lv: tuple, policy: str = "nan_counted", units: str = "mm") -> CaseResult:
    """A case with classes 1 (RV) and 3 (LV); each tuple is (dice, hd95, asd, empty, excluded)."""
    recs = tuple(
        ClassResult(idx, name, *vals) for idx, name, vals in ((1, "RV", rv), (3, "LV", lv))
    )
    return CaseResult(cid, recs, units, "medpy", policy)


@pytest.fixture
def cases() -> list[CaseResult]:
    nan = math.nan
    return [
        _case("a", (0.8, 4.0, 1.0, None, False), (0.9, 2.0, 0.5, None, False)),
        _case("b", (0.6, 6.0, 2.0, None, False), (0.0, nan, nan, "pred_empty", False)),
        _case("c", (1.0, 0.0, 0.0, "both_empty", False), (0.7, 3.0, 1.5, None, False)),
    ]


def test_summarize_means_counts_and_nan_handling(cases):
    s = summarize(cases, checkpoint="best")
    assert s["n_cases"] == 3 and s["hd95_units"] == "mm" and s["hd95_mode"] == "medpy"
    assert s["empty_policy"] == "nan_counted" and s["checkpoint"] == "best"
    rv, lv = s["classes"]["RV"], s["classes"]["LV"]
    assert rv["dice"]["mean"] == pytest.approx(0.8) and rv["dice"]["n"] == 3
    assert rv["dice"]["std"] == pytest.approx(np.std([0.8, 0.6, 1.0]))
    assert rv["hd95"]["mean"] == pytest.approx(10 / 3)
    assert lv["dice"]["mean"] == pytest.approx(1.6 / 3) and lv["dice"]["n"] == 3
    assert lv["hd95"]["mean"] == pytest.approx(2.5) and lv["hd95"]["n"] == 2  # NaN left out, counted
    assert lv["empty"] == {"both_empty": 0, "pred_empty": 1, "ref_empty": 0}
    assert s["empty_events"] == {"both_empty": 1, "pred_empty": 1, "ref_empty": 0}
    assert s["overall"]["dice"] == pytest.approx((0.8 + 1.6 / 3) / 2)
    assert s["overall"]["hd95"] == pytest.approx((10 / 3 + 2.5) / 2)


def test_skip_policy_excludes_from_means():
    skipped = [
        _case("a", (0.8, 4.0, 1.0, None, False), (0.9, 2.0, 0.5, None, False), "skip"),
        _case("b", (0.0, math.nan, math.nan, "ref_empty", True), (0.5, 8.0, 3.0, None, False), "skip"),
    ]
    s = summarize(skipped)
    assert s["classes"]["RV"]["dice"] == {"mean": 0.8, "std": 0.0, "n": 1}
    assert s["classes"]["RV"]["excluded"] == 1 and s["n_excluded"] == 1
    assert s["empty_events"]["ref_empty"] == 1


def test_mixed_conventions_are_refused(cases):
    other = _case("d", (0.5, 1.0, 1.0, None, False), (0.5, 1.0, 1.0, None, False), units="pixels")
    with pytest.raises(ValueError, match="hd95_units"):
        summarize(cases + [other])
    with pytest.raises(ValueError):
        summarize([])


def test_markdown_table(cases):
    md = summary_markdown(summarize(cases))
    lines = md.splitlines()
    assert lines[0] == "| class | Dice (mean ± std) | HD95 mm (mean ± std) | n |"
    assert lines[2].startswith("| RV | 0.800 ± ")
    assert "| LV |" in md and "(n=2)" in md  # the HD95 mean of LV holds 2 of 3 cases
    assert "pred_empty 1" in md and "nan_counted" in md


def test_folds_summary(cases):
    folds = {"0": cases[:2], "1": cases[2:]}
    s = summarize_folds(folds)
    assert set(s) == {"folds", "across_folds", "pooled"}
    assert s["pooled"]["n_cases"] == 3
    fold_means = [s["folds"][k]["classes"]["RV"]["dice"]["mean"] for k in ("0", "1")]
    assert s["across_folds"]["classes"]["RV"]["dice"]["mean"] == pytest.approx(np.mean(fold_means))
    assert s["across_folds"]["classes"]["RV"]["dice"]["n"] == 2


def test_write_report_files(tmp_path, cases):
    out = tmp_path / "eval"
    paths = write_report(cases, out, checkpoint="last")
    assert sorted(p.name for p in out.iterdir()) == ["boxplot.png", "per_case.csv", "summary.json", "summary.md"]
    with open(paths["per_case"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert tuple(CSV_COLUMNS[:6]) == ("case", "class", "dice", "hd95", "asd", "empty")
    assert len(rows) == 6
    assert rows[3] == {"case": "b", "class": "LV", "dice": "0.0", "hd95": "nan", "asd": "nan",
                       "empty": "pred_empty", "class_index": "3"}
    assert rows[0]["empty"] == ""
    summary = json.loads(paths["summary"].read_text())  # strict JSON: NaN written as null
    for key in ("classes", "overall", "hd95_units", "hd95_mode", "empty_policy", "empty_events", "n_cases"):
        assert key in summary
    assert summary["checkpoint"] == "last"
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["markdown"].read_text().startswith("| class |")


def test_report_round_trip(tmp_path, cases):
    write_report(cases, tmp_path, plot=False)
    back = read_report(tmp_path)
    assert [c.case_id for c in back] == ["a", "b", "c"]
    a, b = summarize(cases), summarize(back)
    assert json.dumps(R._json_ready(a), sort_keys=True) == json.dumps(R._json_ready(b), sort_keys=True)


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    R.atomic_write_text(target, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(R.os, "replace", boom)
    with pytest.raises(OSError):
        R.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_report_of_real_evaluations(tmp_path):
    ref = np.zeros((4, 16, 16), np.uint8)
    ref[1:3, 4:10, 4:10] = 1
    ref[1:3, 6:8, 6:8] = 3
    pred = np.roll(ref, 1, axis=2)
    res = [evaluate_case(pred, ref, {1: "RV", 2: "Myo", 3: "LV"}, (5.0, 1.0, 1.0), case_id=f"k{i}") for i in range(2)]
    s = summarize(res)
    assert s["classes"]["Myo"]["empty"]["both_empty"] == 2
    assert s["classes"]["RV"]["hd95"]["mean"] == pytest.approx(res[0][1].hd95)
    write_report(res, tmp_path)
    assert (tmp_path / "boxplot.png").stat().st_size > 1000


def test_report_files_are_shareable(tmp_path):
    """Reports are written through mkstemp (owner-only) but end with the umask's usual permissions."""
    import os
    import stat

    from scribmed.runtime.files import atomic_write_text

    path = atomic_write_text(tmp_path / "summary.json", "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
