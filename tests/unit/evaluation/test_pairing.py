"""PairedCases: the one place predictions meet references (ids, labels, shapes, spacing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scribmed.data.errors import DataError
from scribmed.data.nifti import write_prediction
from scribmed.evaluation.pairing import PairedCases, Reference


def _ref(cid: str, shape=(2, 4, 4), spacing=(5.0, 1.0, 1.0), label=True) -> Reference:
    return Reference(cid, Path(f"/data/{cid}.h5"), np.ones(shape, np.uint8) if label else None, spacing)


def test_pairs_in_reference_order_with_arrays_and_files(tmp_path):
    file = write_prediction(tmp_path / "b.nii.gz", np.zeros((2, 4, 4), np.uint8), (5.0, 1.0, 1.0))
    pairs = list(PairedCases([_ref("a"), _ref("b")], {"b": file, "a": np.ones((2, 4, 4), np.uint8)}))
    assert [p.case_id for p in pairs] == ["a", "b"]
    cid, pred, ref, spacing = pairs[1]
    assert cid == "b" and pred.shape == (2, 4, 4) and not pred.any() and spacing == (5.0, 1.0, 1.0)


def test_spacing_override_and_its_length_check():
    pair = next(iter(PairedCases([_ref("a", spacing=None)], {"a": np.ones((2, 4, 4), np.uint8)}, spacing=(1, 2, 3))))
    assert pair.spacing == (1.0, 2.0, 3.0)
    with pytest.raises(DataError, match=r"spacing \(1.0, 2.0\) has 2 values for a 3D reference"):
        list(PairedCases([_ref("a")], {"a": np.ones((2, 4, 4), np.uint8)}, spacing=(1, 2)))


def test_missing_prediction_is_an_error_unless_allowed(tmp_path):
    refs = [_ref("a"), _ref("b")]
    with pytest.raises(DataError, match=r"no prediction for 1 of 2 labelled cases \(b\); use --allow-missing"):
        list(PairedCases(refs, {"a": np.ones((2, 4, 4), np.uint8)}, where=tmp_path))
    assert [p.case_id for p in PairedCases(refs, {"a": np.ones((2, 4, 4), np.uint8)}, allow_missing=True)] == ["a"]


def test_shape_mismatch_names_the_prediction_file(tmp_path):
    file = write_prediction(tmp_path / "a.nii.gz", np.zeros((2, 4, 5), np.uint8), None)
    with pytest.raises(DataError, match=r"a\.nii\.gz.*prediction shape \(2, 4, 5\) differs from the reference's \(2, 4, 4\)"):
        list(PairedCases([_ref("a")], {"a": file}))


def test_references_without_labels():
    with pytest.raises(DataError, match=r"1 reference case\(s\) have no label \(b\)"):
        list(PairedCases([_ref("a"), _ref("b", label=False)], {"a": np.ones((2, 4, 4), np.uint8)}))
    with pytest.raises(DataError, match="no reference case has a label"):
        list(PairedCases([_ref("b", label=False)], {}, allow_missing=True))
