"""Exact resume: a run killed mid-epoch and resumed from last.pt ends with the uninterrupted run's weights."""

from __future__ import annotations

import json

import pytest
import torch

from scribmed.data.case import CARDIAC
from scribmed.data.phantoms import generate_cardiac
from scribmed.runtime.checkpoint import load_checkpoint
from scribmed.recipes.dmpls.config import DMPLSConfig
from scribmed.recipes.dmpls.trainer import DMPLSTrainer
from scribmed.recipes.dmpls.trainer import train_dmpls
from scribmed.runtime.files import file_sha256


class SimulatedKill(RuntimeError):
    pass


@pytest.fixture(scope="module")
def cases():
    return [p.to_case() for p in generate_cardiac(3, seed=1, size=(56, 64), slices=(3, 3))]


def config(**kw) -> DMPLSConfig:
    # 8 iterations in epochs of 3: checkpoints at 3, 6 and the final partial epoch's 8
    base = dict(iterations=8, batch_size=4, size=(64, 64), epoch_length=3, device="cpu", progress=False)
    base.update(kw)
    return DMPLSConfig(**base)


def _kill_at(monkeypatch, iteration: int) -> None:
    original = DMPLSTrainer._iteration

    def dying(self, engine, batch):
        if engine.state.iteration == iteration:
            raise SimulatedKill(f"killed at iteration {iteration}")
        return original(self, engine, batch)

    monkeypatch.setattr(DMPLSTrainer, "_iteration", dying)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different[:5]}"


def test_kill_and_resume_matches_uninterrupted(cases, tmp_path, monkeypatch):
    train, val = cases[:4], cases[4:]
    full = train_dmpls(train, val, CARDIAC, tmp_path / "full", config())

    out = tmp_path / "killed"
    with monkeypatch.context() as m:
        _kill_at(m, 5)  # mid-way through the second epoch: iterations 4 and 5 are lost
        with pytest.raises(SimulatedKill):
            train_dmpls(train, val, CARDIAC, out, config())
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["trainer"]["iteration"] == 3
    sha_at_kill = file_sha256(out / "last.pt")

    # resume with a different worker count: results must not depend on it
    resumed = train_dmpls(train, val, CARDIAC, out, config(num_workers=2), resume=True)

    a, b = load_checkpoint(full.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    _assert_same(a["network"], b["network"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        _assert_same(sa, sb)
    assert torch.equal(a["loss"]["_extra_state"]["generator_state"], b["loss"]["_extra_state"]["generator_state"])
    assert a["trainer"] == b["trainer"] == {"iteration": 8, "epoch": 3}
    assert (full.best_metric, full.best_iteration) == (resumed.best_metric, resumed.best_iteration)
    _assert_same(load_checkpoint(full.best_checkpoint)["network"], load_checkpoint(resumed.best_checkpoint)["network"])

    hist = json.loads(resumed.history_path.read_text())
    assert [e["iteration"] for e in hist["epochs"]] == [3, 6, 8]
    assert hist["resumed_from"] == [{"checkpoint": str(out / "last.pt"), "sha256": sha_at_kill, "iteration": 3}]
    full_hist = json.loads(full.history_path.read_text())
    for e_full, e_res in zip(full_hist["epochs"], hist["epochs"]):
        for key in ("loss", "pce", "dice", "lr", "val_mean_dice"):
            assert e_full[key] == e_res[key], key


def test_resume_without_checkpoint_starts_fresh(cases, tmp_path):
    res = train_dmpls(cases[:2], [], CARDIAC, tmp_path / "new", config(iterations=3), resume=True)
    assert res.iterations == 3 and res.last_checkpoint.is_file()
    assert json.loads(res.history_path.read_text())["resumed_from"] == []
