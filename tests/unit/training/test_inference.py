"""Slice-wise volume inference: geometry, batching, mode handling, NIfTI output and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ensemble_reference import ensemble_label_map

from scribmed.data.case import Case, CaseArrays
from scribmed.data.nifti import read_label_nifti
from scribmed.training.inference import (
    labels_from_probabilities,
    predict_cases,
    predict_probabilities,
    predict_volume,
)
from scribmed.networks.unet_dual import DualBranchUNet


class ThresholdNet(torch.nn.Module):
    """Logits whose argmax is ``(x > 0.5)`` (class 1) else 0; counts calls; dual output in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.calls = 0
        self.seen_shapes: list[tuple[int, ...]] = []

    def forward(self, x):
        self.calls += 1
        self.seen_shapes.append(tuple(x.shape))
        fg = (x[:, :1] > 0.5).float()
        logits = torch.cat([1 - fg, fg], dim=1) + 0 * self.dummy
        return (logits, logits) if self.training else logits


def _volume(shape=(5, 48, 80), seed=0):
    """Image whose thresholded mask is a disk per slice (centres and radii vary)."""
    rng = np.random.default_rng(seed)
    s, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros(shape, bool)
    for z in range(s):
        cy, cx, r = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w, rng.uniform(0.15, 0.3) * h
        mask[z] = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    return mask.astype(np.float32), mask


def _dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_predict_volume_native_size_is_exact():
    image, mask = _volume((4, 64, 64))
    pred = predict_volume(ThresholdNet(), image, size=(64, 64), batch_size=3)
    assert pred.dtype == np.uint8 and pred.shape == (4, 64, 64)
    np.testing.assert_array_equal(pred, mask)


def test_predict_volume_resizes_there_and_back():
    image, mask = _volume((5, 48, 80))
    net = ThresholdNet()
    pred = predict_volume(net, image, size=(64, 64), batch_size=2)
    assert pred.shape == (5, 48, 80)
    assert {s[-2:] for s in net.seen_shapes} == {(64, 64)} and net.calls == 3  # 2 + 2 + 1 slices
    assert all(_dice(pred[z] == 1, mask[z]) > 0.9 for z in range(5))
    # batching and an "auto" device request do not change the answer
    np.testing.assert_array_equal(pred, predict_volume(ThresholdNet(), image, size=(64, 64), batch_size=16, device="auto"))


def test_probabilities_give_predict_volumes_labels_and_mirroring_flips_back():
    image, mask = _volume((5, 48, 80))
    net = ThresholdNet()
    prob = predict_probabilities(net, image, size=(64, 64), batch_size=2)
    assert prob.shape == (5, 2, 64, 64) and prob.dtype == torch.float32
    torch.testing.assert_close(prob.sum(1), torch.ones(5, 64, 64))
    np.testing.assert_array_equal(labels_from_probabilities(prob, (48, 80)), predict_volume(net, image, (64, 64)))
    net.calls = 0
    mirrored = predict_probabilities(net, image, size=(64, 64), batch_size=16, mirror=True)
    assert net.calls == 4  # one pass per flip: none, W, H, both
    torch.testing.assert_close(mirrored, prob)  # a thresholding net commutes with flips: each flip undone


def test_predict_volume_uses_main_head_and_restores_mode():
    net = DualBranchUNet(1, 4, features=(4, 8), dropout=(0.0, 0.0))
    net.train()
    image = np.random.default_rng(0).random((3, 30, 20), dtype=np.float32)
    a = predict_volume(net, image, size=(32, 32))
    assert net.training  # restored
    net.eval()
    with torch.no_grad():
        from scribmed.transforms.resize import resize_back, resize_slices

        logits = net(resize_slices(torch.from_numpy(image)[:, None], (32, 32)))
        expected = resize_back(logits.argmax(1).to(torch.uint8), (30, 20)).numpy()
    np.testing.assert_array_equal(a, expected)
    assert a.max() <= 3


def _case(case_id: str, image, spacing, affine=None) -> Case:
    arrays = CaseArrays(image=image, spacing=spacing, affine=affine)
    return Case(case_id, case_id, Path(f"/data/{case_id}.nii.gz"), loader=lambda: arrays)


def test_predict_cases_writes_reference_geometry_and_skips_done(tmp_path):
    img1, mask1 = _volume((3, 40, 56), seed=1)
    img2, mask2 = _volume((4, 64, 64), seed=2)
    affine = np.array([[-0.75, 0, 0, 10.0], [0, 0.75, 0, -5.0], [0, 0, 5.0, 2.0], [0, 0, 0, 1]])
    cases = [_case("subject1", img1, (5.0, 0.75, 0.75), affine), _case("subject2", img2, (10.0, 1.5, 1.25))]
    net = ThresholdNet()
    paths = predict_cases(net, cases, tmp_path / "pred", size=(64, 64), progress=False)
    assert [p.name for p in paths] == ["subject1.nii.gz", "subject2.nii.gz"]
    for path, case in zip(paths, cases):
        vol = read_label_nifti(path)
        assert vol.array.shape == case.image.shape
        assert vol.spacing == pytest.approx(case.spacing)
        np.testing.assert_array_equal(vol.array, predict_volume(ThresholdNet(), case.image, size=(64, 64)))
    assert read_label_nifti(paths[0]).affine == pytest.approx(affine)
    np.testing.assert_array_equal(read_label_nifti(paths[1]).array, mask2)  # native 64x64: exact
    # a second call finds both files and predicts nothing
    calls = net.calls
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert predict_cases(net, cases, tmp_path / "pred", size=(64, 64), progress=False) == paths
    assert net.calls == calls and [p.stat().st_mtime_ns for p in paths] == mtimes
    # overwrite recomputes
    predict_cases(net, cases[:1], tmp_path / "pred", size=(64, 64), progress=False, overwrite=True)
    assert net.calls > calls
    assert not list((tmp_path / "pred").glob(".*tmp*"))  # no temporary files left behind


def test_predict_cases_with_several_networks_writes_the_argmax_of_their_mean_probabilities(tmp_path):
    """An ensemble (and mirroring): the mean of the networks' softmax over flips, argmax, resized back."""
    torch.manual_seed(0)
    nets = [DualBranchUNet(1, 3, features=(4, 8, 16), dropout=(0.0, 0.0, 0.0)).eval() for _ in range(2)]
    image = np.random.default_rng(0).random((2, 40, 56), dtype=np.float32)
    case = _case("c1", image, (5.0, 1.0, 1.0))
    (path,) = predict_cases(nets, [case], tmp_path / "ens", size=(32, 32), progress=False, mirror=True)
    np.testing.assert_array_equal(read_label_nifti(path).array, ensemble_label_map(nets, image, (32, 32), mirror=True))
    # one network without mirroring keeps predict_volume's path
    (single,) = predict_cases(nets[:1], [case], tmp_path / "one", size=(32, 32), progress=False)
    np.testing.assert_array_equal(read_label_nifti(single).array, predict_volume(nets[0], image, size=(32, 32)))
    with pytest.raises(ValueError, match="at least one network"):
        predict_cases([], [case], tmp_path / "none", size=(32, 32), progress=False)


def test_bad_inputs():
    with pytest.raises(ValueError, match="expected an image"):
        predict_volume(ThresholdNet(), np.zeros((4, 4), np.float32), size=(8, 8))
    with pytest.raises(ValueError, match="batch_size"):
        predict_volume(ThresholdNet(), np.zeros((1, 4, 4), np.float32), size=(8, 8), batch_size=0)


@pytest.mark.realdata
def test_real_acdc_volume_roundtrip(acdc_root, tmp_path):
    from scribmed.data.layouts import open_dataset

    case = open_dataset("acdc-h5", acdc_root).cases[0]
    net = DualBranchUNet(1, 4, features=(4, 8, 16), dropout=(0.0, 0.0, 0.0))
    (path,) = predict_cases(net, [case], tmp_path, size=(128, 128), progress=False)
    vol = read_label_nifti(path)
    assert vol.array.shape == case.image.shape  # native grid, e.g. (10, 256, 216)
    assert vol.spacing == (1.0, 1.0, 1.0)  # the h5 layout stores no spacing: unit voxels
    np.testing.assert_array_equal(vol.array, predict_volume(net, case.image, size=(128, 128)))
