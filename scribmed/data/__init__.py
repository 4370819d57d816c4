"""Dataset readers (one per public layout), splits, phantoms and scribble synthesis.

Arrays are ``(slices, H, W)`` with spacing ``(dz, dy, dx)`` in mm (or ``None``); see
:mod:`scribmed.data.case` and ``docs/data.md``.
"""

from scribmed.data.case import ABDOMINAL, CARDIAC, Case, CaseArrays, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError, SplitError
from scribmed.data.layouts import LAYOUTS, open_dataset, write_dataset
from scribmed.data.nifti import read_image_nifti, read_label_nifti, write_prediction

__all__ = [
    "ABDOMINAL",
    "CARDIAC",
    "LAYOUTS",
    "Case",
    "CaseArrays",
    "ClassMap",
    "DataError",
    "Dataset",
    "SplitError",
    "open_dataset",
    "read_image_nifti",
    "read_label_nifti",
    "write_dataset",
    "write_prediction",
]
