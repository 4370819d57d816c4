"""The run folder's fold bookkeeping: finished, not finished, and folds that can never run."""

from __future__ import annotations

import json

from scribmed.cli import main
from scribmed.crossval.runner import empty_folds, missing_folds


def _run_folder(tmp_path, absent: list[str]):
    folds = [{"train": ["p3", "p4"], "val": [], "test": ["p1", "p2"]},
             {"train": ["p1", "p2"], "val": [], "test": ["p3", "p4"]},
             {"train": ["p1", "p3"], "val": [], "test": ["p9"]}]
    (tmp_path / "split.json").write_text(json.dumps({"name": "s", "folds": folds}))
    (tmp_path / "run.json").write_text(json.dumps({"missing_patients_dropped": absent}))
    (tmp_path / "fold_1").mkdir()
    (tmp_path / "fold_1" / "fold.json").write_text("{}")
    return tmp_path


def test_a_fold_whose_test_patients_are_all_absent_never_runs(tmp_path):
    run = _run_folder(tmp_path, ["p9"])
    assert missing_folds(run) == ([2, 3], 3) and empty_folds(run) == [3]
    (tmp_path / "all_present").mkdir()
    assert empty_folds(_run_folder(tmp_path / "all_present", [])) == []


def test_merge_names_the_folds_that_never_run_apart_from_the_unfinished(tmp_path, capsys, monkeypatch):
    import scribmed.crossval.runner as runner

    run = _run_folder(tmp_path, ["p9"])
    (run / "summary.md").write_text("the summary\n")
    monkeypatch.setattr(runner, "merge_folds", lambda out: out / "summary.json")
    assert main(["cv", "merge", str(run)]) == 0
    out = capsys.readouterr().out
    assert "merged 1 of 3 folds; not finished: 2; no test or training patients in this dataset, never run: 3" in out
