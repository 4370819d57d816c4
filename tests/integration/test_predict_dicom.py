"""`scribmed predict` on DICOM series: one DICOM-SEG per series, the same labels as the NIfTI output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scribmed.cli import main
from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import read_label_nifti
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.recipes.dmpls.config import DMPLSConfig
from scribmed.recipes.dmpls.trainer import train_dmpls


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-iteration DMPLS checkpoint and the phantom's cases written as DICOM series."""
    base = tmp_path_factory.mktemp("predict_dicom")
    root = write_phantom_dataset("cardiac", "acdc-h5", base / "data", n_patients=2, seed=3, slices=(2, 2), size=48,
                                 frames=("ED",))
    ds = open_dataset("acdc-h5", root)
    cfg = DMPLSConfig(iterations=2, epoch_length=2, batch_size=2, size=(32, 32), device="cpu", progress=False,
                      upsample="bilinear")
    result = train_dmpls(list(ds)[:1], list(ds)[1:], ds.class_map, base / "run", cfg)
    series = write_phantom_dataset("cardiac", "dicom", base / "dicom", n_patients=2, seed=3, slices=(2, 2), size=48,
                                   frames=("ED",))
    return series, result.checkpoint("best"), base, ds.class_map


def _predict(ckpt, series, out, *extra: str) -> int:
    return main(["predict", "--checkpoint", str(ckpt), "--input", str(series), "--layout", "dicom", "--out", str(out),
                 "--device", "cpu", "--quiet", *extra])


def test_dicom_seg_per_series_equals_the_nifti_prediction(trained, capsys):
    import highdicom as hd

    series, ckpt, base, class_map = trained
    assert _predict(ckpt, series, base / "seg", "--format", "dicom-seg") == 0
    assert json.loads(capsys.readouterr().out)["cases"] == 2
    assert _predict(ckpt, series, base / "nii") == 0  # --format nifti is the default
    ds = open_dataset("dicom", series)
    assert sorted(p.name for p in (base / "seg").iterdir()) == sorted([f"{c}.dcm" for c in ds.case_ids]
                                                                      + ["predictions.json"])
    values = np.array([0, *class_map.foreground])  # segment number -> class value
    for case in ds:
        seg = hd.seg.segread(base / "seg" / f"{case.case_id}.dcm")
        assert [seg.get_segment_description(n).segment_label for n in seg.segment_numbers] == ["RV", "Myo", "LV"]
        sources = [hd.imread(p).SOPInstanceUID for p in case.source_files]
        numbers = seg.get_pixels_by_source_instance(sources, combine_segments=True)
        nifti = read_label_nifti(base / "nii" / f"{case.case_id}.nii.gz", "prediction")  # (z, y, x)
        np.testing.assert_array_equal(values[numbers], nifti.array)
        np.testing.assert_allclose(nifti.affine, case.affine, atol=1e-6)  # the NIfTI overlays the series
    stamp = (base / "seg" / f"{ds.case_ids[0]}.dcm").stat().st_mtime_ns
    assert _predict(ckpt, series, base / "seg", "--format", "dicom-seg") == 0  # a rerun keeps what exists
    assert (base / "seg" / f"{ds.case_ids[0]}.dcm").stat().st_mtime_ns == stamp


def test_dicom_seg_needs_dicom_input(trained, tmp_path, capsys):
    series, ckpt, _, _ = trained
    bogus = tmp_path / "never_loaded.pt"  # refused before any model is loaded
    assert main(["predict", "--checkpoint", str(bogus), "--input", str(series), "--out", str(tmp_path / "p"),
                 "--format", "dicom-seg", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--format dicom-seg needs DICOM series as input (--layout dicom)" in err
    assert not (tmp_path / "p").exists()
