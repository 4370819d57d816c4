"""A fold job in the process that runs it: its thread share and its job record."""

from __future__ import annotations

import os

import torch

from scribmed.crossval.fold_jobs import FoldJob, read_job_record


def test_a_job_runs_with_its_thread_share_and_records_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    seen = []

    def work(fold: int, stage: str) -> None:
        seen.append((fold, stage, torch.get_num_threads(), os.environ["OMP_NUM_THREADS"]))

    threads = torch.get_num_threads()
    try:
        assert FoldJob(work, tmp_path, 2, "train", threads=1)() == "fold 2 train: finished"
    finally:
        torch.set_num_threads(threads)
    assert seen == [(2, "train", 1, "1")]
    record = read_job_record(tmp_path, 2, "train")
    assert record["state"] == "finished" and record["threads"] == 1


def test_without_a_share_torch_keeps_its_threads(tmp_path):
    before = torch.get_num_threads()
    FoldJob(lambda fold, stage: None, tmp_path, 1, "train")()
    assert torch.get_num_threads() == before and read_job_record(tmp_path, 1, "train")["threads"] is None
