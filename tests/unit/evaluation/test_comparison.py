"""Side-by-side method tables (``scribmed cv compare``) from CV and evaluation summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scribmed.cli import main
from scribmed.evaluation.comparison import (
    compare_runs,
    comparison_markdown,
    comparison_row,
)


def _summary(dice: float, hd: float, n: int = 4, pooled: bool = True, units: str = "pixels") -> dict:
    block = {
        "n_cases": n, "hd95_units": units,
        "classes": {c: {"dice": {"mean": dice + i / 100, "std": 0.1}, "hd95": {"mean": hd + i}} for i, c in enumerate(("RV", "Myo", "LV"))},
        "overall": {"dice": dice + 0.01, "hd95": hd + 1},  # evaluation reports store bare means here
    }
    return {"pooled": block, "folds": {}} if pooled else block


def _run(tmp: Path, name: str, summary: dict, recipe: str | None = None) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "summary.json").write_text(json.dumps(summary))
    if recipe:
        (d / "run.json").write_text(json.dumps({"recipe": recipe}))
    return d


def test_rows_and_table():
    row = comparison_row("samsp", _summary(0.8, 3.0))
    assert row["classes"]["Myo"] == {"dice": pytest.approx(0.81), "hd95": pytest.approx(4.0)}
    assert row["mean"] == {"dice": pytest.approx(0.81), "hd95": pytest.approx(4.0)} and row["cases"] == 4
    plain = comparison_row("baseline", _summary(0.5, 20.0, pooled=False))
    text = comparison_markdown([row, plain], {"samsp": "SAM-SP"})
    lines = text.splitlines()
    assert lines[0] == ("| method | RV Dice | Myo Dice | LV Dice | mean Dice | RV HD95 | Myo HD95 | LV HD95 | "
                        "mean HD95 (pixels) |")
    assert lines[2] == "| SAM-SP | 0.800 | 0.810 | 0.820 | **0.810** | 3.00 | 4.00 | 5.00 | 4.00 |"
    assert lines[3].startswith("| baseline | 0.500 |")
    with pytest.raises(ValueError, match="evaluated on 9 cases"):
        comparison_markdown([row, comparison_row("x", _summary(0.5, 2.0, n=9))])
    with pytest.raises(ValueError, match="units differ"):
        comparison_markdown([row, comparison_row("x", _summary(0.5, 2.0, units="mm"))])
    with pytest.raises(ValueError, match="not a scribmed summary"):
        comparison_row("x", {"pooled": {}})


def test_cli_compare_writes_table_and_rejects_bad_folders(tmp_path, capsys):
    a = _run(tmp_path, "a", _summary(0.8, 3.0), recipe="samsp")
    b = _run(tmp_path, "b", _summary(0.6, 9.0), recipe="dmpls")
    out = tmp_path / "cmp.md"
    assert main(["cv", "compare", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| samsp (a) | 0.800" in printed and "| dmpls (b) | 0.600" in printed
    assert out.read_text() in printed
    assert [r["method"] for r in json.loads(out.with_suffix(".json").read_text())["rows"]] == ["samsp (a)", "dmpls (b)"]
    assert compare_runs([a, b]) == out.read_text()
    assert main(["cv", "compare", str(a), str(tmp_path / "missing")]) == 1
    assert "no readable summary.json" in capsys.readouterr().err
    c = _run(tmp_path, "c", _summary(0.6, 9.0, n=7))
    assert main(["cv", "compare", str(a), str(c)]) == 1
    assert "not comparable" in capsys.readouterr().err


def test_runs_on_different_cases_are_refused(tmp_path, capsys):
    a = _run(tmp_path, "a", _summary(0.8, 3.0), recipe="samsp")
    b = _run(tmp_path, "b", _summary(0.6, 9.0), recipe="dmpls")
    for d, ids in ((a, ["p1", "p2", "p3", "p4"]), (b, ["p1", "p2", "p3", "p5"])):
        (d / "fold_1" / "evaluation").mkdir(parents=True)
        rows = ["case,class,dice"] + [f"{i},RV,0.5" for i in ids]
        (d / "fold_1" / "evaluation" / "per_case.csv").write_text("\n".join(rows) + "\n")
    assert main(["cv", "compare", str(a), str(b)]) == 1
    assert "evaluated different cases (e.g. p4, p5)" in capsys.readouterr().err
    (b / "fold_1" / "evaluation" / "per_case.csv").write_text("case,class,dice\n" + "\n".join(f"p{i},RV,0.5" for i in range(1, 5)) + "\n")
    assert main(["cv", "compare", str(a), str(b)]) == 0
