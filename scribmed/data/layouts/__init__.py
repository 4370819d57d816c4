"""The on-disk layouts scribmed reads and writes, by name.

``open_dataset("acdc-h5", root)`` lists a dataset folder (cheap) and returns a
:class:`~scribmed.data.dataset.Dataset` whose cases load lazily; ``write_case`` /
``write_dataset`` write the exact layout the reader reads (used by the phantom generator).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

from scribmed.data.case import Case
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.data.layouts import (
    acdc_h5,
    acdc_nifti,
    chaos_npz,
    chaos_t2_nifti,
    dicom,
    dsb2018,
    generic,
    mscmr,
)


@dataclass(frozen=True)
class Layout:
    """A named layout: how to read a folder and how to write one case into it."""

    name: str
    read: Callable[..., Dataset]
    write_case: Callable[..., Path]
    description: str


LAYOUTS: dict[str, Layout] = {
    m.NAME: Layout(m.NAME, m.read_dataset, m.write_case, (m.__doc__ or "").strip().splitlines()[0])
    for m in (acdc_h5, acdc_nifti, mscmr, chaos_npz, chaos_t2_nifti, generic, dsb2018, dicom)
}


def get_layout(layout: str) -> Layout:
    """The :class:`Layout` called ``layout``; unknown names raise a DataError listing the known ones."""
    try:
        return LAYOUTS[layout]
    except (KeyError, TypeError):
        raise DataError(
            None, f"unknown layout {layout!r}; known layouts: {', '.join(sorted(LAYOUTS))}"
        ) from None


def open_dataset(layout: str, root: str | Path, **options: Any) -> Dataset:
    """Open the dataset folder ``root`` in ``layout``.

    Args:
        layout: one of ``LAYOUTS`` (``acdc-h5``, ``acdc-nifti``, ``mscmr``, ``chaos-npz``,
            ``chaos-t2-nifti``, ``generic``, ``dsb2018``, ``dicom``).
        root: the dataset folder as distributed.
        **options: layout options, e.g. ``spacing=(dz, dy, dx)`` (mm) for ``acdc-h5`` and
            ``chaos-npz``, ``class_map=`` for any layout (required by ``generic`` when its
            dataset.json names no classes; ``fallback_class_map=`` for ``generic`` and ``dicom``
            applies when nothing else names them), ``channels=1|3`` for ``dsb2018``.

    Raises:
        DataError: unknown layout, missing root, or a folder that does not match the layout.
    """
    spec = get_layout(layout)
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(root, "dataset folder does not exist")
    if not root.is_dir():
        raise DataError(root, "dataset root is not a folder")
    try:
        return spec.read(root, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise DataError(root, f"option not supported by layout {layout}: {exc}") from None
        raise


CaseLike = Union[Case, Mapping[str, Any]]

_CASE_FIELDS = ("image", "label", "scribble", "spacing", "affine", "instance")


def _takes(write_case: Callable[..., Path], name: str) -> bool:
    """Whether a layout's ``write_case`` has a parameter ``name`` (or ``**kwargs``)."""
    params = inspect.signature(write_case).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def write_dataset(layout: str, root: str | Path, cases: Iterable[CaseLike], **options: Any) -> list[str]:
    """Write every case of ``cases`` into ``root`` in ``layout``; returns the case ids written.

    Args:
        layout: layout name.
        root: destination folder (created).
        cases: :class:`Case` objects (loaded here) or mappings with ``case_id``, ``patient_id``,
            ``image`` and optional ``label``, ``scribble``, ``spacing``, ``affine``, ``instance``
            plus any per-case layout option (e.g. ``subset`` for mscmr). A Case's instance map
            is passed only to layouts that store instances (``dsb2018``); the others keep its
            semantic label.
        **options: layout options applied to every case (e.g. ``class_map=`` for generic,
            ``subset=`` for mscmr); per-case values override them.
    """
    spec = get_layout(layout)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for item in cases:
        if isinstance(item, Case):
            arrays = item.load()
            fields: dict[str, Any] = {k: getattr(arrays, k) for k in _CASE_FIELDS}
            if fields["instance"] is None or not _takes(spec.write_case, "instance"):
                del fields["instance"]
            fields.update(case_id=item.case_id, patient_id=item.patient_id)
        else:
            fields = dict(item)
        kwargs = {**options, **fields}
        case_id = kwargs.pop("case_id")
        patient_id = kwargs.pop("patient_id")
        image = kwargs.pop("image")
        spec.write_case(root, case_id, patient_id, image, **kwargs)
        written.append(case_id)
    return written


__all__ = ["LAYOUTS", "Layout", "get_layout", "open_dataset", "write_dataset"]
