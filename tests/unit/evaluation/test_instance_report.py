"""The instance evaluator: per-case results, summaries, markdown, report files and their round trip."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from scribmed.evaluation import (
    instance_cv_markdown,
    instance_summary_markdown,
    plot_instance_fold_boxplots,
    read_instance_report,
    read_report,
    summarize_instance,
    summarize_instance_folds,
    write_instance_report,
    write_report,
)
from scribmed.evaluation.instance_report import INSTANCE_CSV_COLUMNS
from scribmed.metrics import (
    DSB_THRESHOLDS,
    INSTANCE_METRICS,
    InstanceCaseResult,
    evaluate_instance_case,
    evaluate_instance_cases,
)


def _two_squares() -> tuple[np.ndarray, np.ndarray]:
    """The hand-computed case of test_instance_metrics: DSB 0.05, F1 0.4, AJI 105/216, PQ 0.24."""
    ref = np.zeros((10, 40), np.int32)
    ref[0:10, 0:10], ref[0:10, 20:30] = 1, 2
    pred = np.zeros_like(ref)
    pred[0:10, 0:6], pred[0:9, 20:25], pred[0:4, 35:39] = 5, 7, 9
    return pred, ref


def _res(cid: str, score: float, n_ref: int = 2, n_pred: int = 2) -> InstanceCaseResult:
    """A result whose every metric equals ``score``."""
    return InstanceCaseResult(cid, n_ref, n_pred, *([score] * len(INSTANCE_METRICS)))


def test_evaluate_instance_case_by_hand():
    pred, ref = _two_squares()
    r = evaluate_instance_case(pred, ref, case_id="sq")
    assert (r.case_id, r.n_ref, r.n_pred) == ("sq", 2, 3)
    assert r.dsb_score == pytest.approx(0.05)
    assert r.f1 == pytest.approx(0.4)
    assert r.aji == pytest.approx(105 / 216) and r.aji_plus == pytest.approx(105 / 216)
    assert (r.pq, r.sq, r.rq) == pytest.approx((0.24, 0.6, 0.4))
    # foreground Dice: |P| = 60 + 45 + 16 = 121, |R| = 200, overlap 105
    assert r.dice == pytest.approx(210 / 321)
    assert r.thresholds == DSB_THRESHOLDS and r.match_iou == 0.5 and r.empty is None
    z = np.zeros_like(ref)
    both = evaluate_instance_case(z, z, "z")
    assert both.empty == "both_empty" and both.dice == 1.0 and both.dsb_score == 1.0 and both.aji == 1.0
    miss = evaluate_instance_case(z, ref, "m")
    assert miss.empty == "pred_empty" and miss.dice == 0.0 and miss.pq == 0.0


def test_evaluate_instance_cases_lazy_and_with_progress():
    pred, ref = _two_squares()
    gen = ((f"c{i}", pred, ref) for i in range(3))
    out = evaluate_instance_cases(gen, progress=True, match_iou=0.4)
    assert [r.case_id for r in out] == ["c0", "c1", "c2"]
    assert out[0].f1 == pytest.approx(0.8)  # both pairs match at IoU > 0.4: 4 / 5
    assert out[0].match_iou == 0.4


def test_summary_values():
    results = [_res("a", 0.2, n_ref=3, n_pred=1), _res("b", 0.6), _res("c", 1.0, n_ref=0, n_pred=0),
               _res("d", 0.0, n_ref=4, n_pred=0)]
    s = summarize_instance(results, checkpoint="best")
    assert s["task"] == "instance" and s["n_cases"] == 4 and s["std_ddof"] == 0
    for m in INSTANCE_METRICS:
        # mean (0.2 + 0.6 + 1.0 + 0.0) / 4 = 0.45; population variance
        # ((-0.25)^2 + 0.15^2 + 0.55^2 + (-0.45)^2) / 4 = 0.1475
        assert s["metrics"][m]["mean"] == pytest.approx(0.45)
        assert s["metrics"][m]["std"] == pytest.approx(math.sqrt(0.1475))
        assert s["metrics"][m]["n"] == 4
    assert s["instances"]["n_ref"] == 9 and s["instances"]["n_pred"] == 3
    assert s["instances"]["n_ref_per_case"]["mean"] == pytest.approx(2.25)
    assert s["empty_events"] == {"both_empty": 1, "pred_empty": 1, "ref_empty": 0}
    conv = s["conventions"]
    assert conv["thresholds"] == list(DSB_THRESHOLDS) and conv["match_iou"] == 0.5
    assert "IoU > t" in conv["matching"] and "Kumar" in conv["aji"]
    assert s["checkpoint"] == "best"
    assert summarize_instance(results)["checkpoint"] is None  # always stated


def test_mixed_conventions_and_empty_are_refused():
    other = InstanceCaseResult("x", 1, 1, *([0.5] * len(INSTANCE_METRICS)), match_iou=0.7)
    with pytest.raises(ValueError, match="match_iou"):
        summarize_instance([_res("a", 0.5), other])
    with pytest.raises(ValueError):
        summarize_instance([])
    with pytest.raises(ValueError):
        summarize_instance_folds({})


def test_markdown_table():
    s = summarize_instance([_res("a", 0.2), _res("b", 0.6)], checkpoint="last")
    s["provenance"] = {"scribbles": {"synthetic": True, "method": "skeleton", "style": "x", "seed": 0}}
    md = instance_summary_markdown(s)
    lines = md.splitlines()
    assert lines[0].startswith("**Scribbles: synthetic**")
    head = lines.index("| metric | mean ± std | n |")
    rows = lines[head + 2: head + 2 + len(INSTANCE_METRICS)]
    assert rows[0] == "| DSB score (IoU 0.5:0.95) | 0.400 ± 0.200 | 2 |"
    assert "| F1 (IoU > 0.5) | 0.400 ± 0.200 | 2 |" in rows
    for label in ("| AJI |", "| AJI+ |", "| PQ (IoU > 0.5) |", "| SQ (IoU > 0.5) |", "| RQ (IoU > 0.5) |",
                  "| Dice (foreground) |"):
        assert any(r.startswith(label) for r in rows), label
    assert "strictly above" in md and "Checkpoint: last." in md and "Kumar" in md


def test_fold_summary_structure_and_cv_markdown():
    folds = {"0": [_res("a", 0.2), _res("b", 0.4)], "1": [_res("c", 0.9)]}
    s = summarize_instance_folds(folds, checkpoint="best")
    assert set(s) == {"task", "folds", "across_folds", "pooled"} and s["task"] == "instance"
    assert set(s["folds"]) == {"0", "1"} and s["folds"]["0"]["n_cases"] == 2
    # fold means 0.3 and 0.9: across folds mean 0.6, population std 0.3
    assert s["across_folds"]["n_folds"] == 2
    assert s["across_folds"]["metrics"]["aji"] == {"mean": pytest.approx(0.6), "std": pytest.approx(0.3), "n": 2}
    # pooled: (0.2 + 0.4 + 0.9) / 3 = 0.5
    assert s["pooled"]["metrics"]["aji"]["mean"] == pytest.approx(0.5) and s["pooled"]["n_cases"] == 3
    md = instance_cv_markdown(s)
    lines = md.splitlines()
    assert lines[0] == "| metric | fold 0 | fold 1 | across folds | pooled |"
    assert "| AJI | 0.300 ± 0.100 | 0.900 ± 0.000 | 0.600 ± 0.300 | 0.500 ± 0.294 |" in lines
    assert "| cases | 2 | 1 | 2 folds | 3 |" in lines
    assert "Checkpoint: best." in md


def test_write_read_round_trip(tmp_path):
    pred, ref = _two_squares()
    z = np.zeros_like(ref)
    results = evaluate_instance_cases([("sq", pred, ref), ("empty", z, z), ("miss", z, ref), ("fp", pred, z)])
    results.append(InstanceCaseResult("odd, \"quoted\"", 1, 2, 0.1, 1 / 3, 2 / 7, 0.3, 0.1 + 0.2, 0.7, 1e-17,
                                      0.123456789012345678, thresholds=(0.3, 0.55), match_iou=0.3))
    # one report per set of conventions
    out = tmp_path / "eval"
    paths = write_instance_report(results[:4], out, checkpoint="best", provenance={"dataset": "toy"})
    assert sorted(p.name for p in out.iterdir()) == ["boxplot.png", "per_case.csv", "summary.json", "summary.md"]
    assert read_instance_report(out) == results[:4]
    write_instance_report(results[4:], tmp_path / "odd", plot=False)
    assert read_instance_report(tmp_path / "odd") == results[4:]  # exact floats, quoting, thresholds
    with open(paths["per_case"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == INSTANCE_CSV_COLUMNS and INSTANCE_CSV_COLUMNS[:3] == ("case", "n_ref", "n_pred")
    assert rows[1]["dsb_score"] == "1.0" and rows[0]["thresholds"].split(";")[:2] == ["0.5", "0.55"]
    summary = json.loads(paths["summary"].read_text())
    assert summary["task"] == "instance" and summary["checkpoint"] == "best"
    assert summary["provenance"] == {"dataset": "toy"}
    assert summary["empty_events"] == {"both_empty": 1, "pred_empty": 1, "ref_empty": 1}
    assert summary["metrics"]["dsb_score"]["mean"] == pytest.approx((0.05 + 1.0 + 0.0 + 0.0) / 4)
    md = paths["markdown"].read_text()
    assert md.startswith("Provenance: dataset: toy.") and "| AJI |" in md


def test_report_kinds_are_told_apart(tmp_path):
    from scribmed.metrics import evaluate_case

    ref = np.zeros((8, 8), np.uint8)
    ref[2:6, 2:6] = 1
    write_report([evaluate_case(ref, ref, [1], case_id="s")], tmp_path / "sem", plot=False)
    with pytest.raises(ValueError, match="semantic"):
        read_instance_report(tmp_path / "sem")
    assert "task" not in json.loads((tmp_path / "sem" / "summary.json").read_text())
    write_instance_report([_res("a", 0.5)], tmp_path / "inst", plot=False)
    with pytest.raises((KeyError, ValueError)):  # the semantic reader does not read instance folders
        read_report(tmp_path / "inst")


def test_box_plots_render(tmp_path):
    import matplotlib.image as mpimg

    folds = {"0": [_res("a", 0.2), _res("b", 0.4)], "1": [_res("c", 0.9), _res("d", 0.7)], "2": [_res("e", 0.5)]}
    path = plot_instance_fold_boxplots(folds, tmp_path / "folds.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
    assert float(img[..., :3].std()) > 0.01  # not blank
    assert [p.name for p in tmp_path.iterdir()] == ["folds.png"]  # no temporary file left
    pred, ref = _two_squares()
    paths = write_instance_report(evaluate_instance_cases([("a", pred, ref), ("b", ref, ref)]), tmp_path / "r")
    assert paths["plot"].stat().st_size > 1000
