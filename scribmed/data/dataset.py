"""A dataset: the ordered, lazily loaded cases of one layout on disk, with its class map."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping, Optional, Sequence

from scribmed.data.case import Case, ClassMap, patients_of
from scribmed.data.errors import DataError
from scribmed.data.validation import check_arrays, check_spacing_values
from scribmed.runtime.progress import progress_bar

SpacingUnit = Literal["mm", "none"]


def _preview(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


class Dataset:
    """The cases of one dataset folder, sorted by case id; arrays load lazily per case.

    Attributes:
        layout: the layout name it was read with (e.g. ``"acdc-h5"``).
        root: the dataset folder.
        class_map: label names and the scribble ignore value.
        spacing_unit: ``"mm"`` when every case carries spacing, ``"none"`` when distances
            will be in pixels (layouts without spacing and no ``spacing=`` option).
        meta: per-case metadata by case id, e.g. ``{"subset": "train", "files": {...}}``.
        problems: issues found while listing (e.g. a label without an image); ``validate()``
            raises the first one.
        provenance: where parts of the data came from when not from the release itself, e.g.
            ``{"scribbles": {"synthetic": True, "seed": 0, ...}}`` for synthesised scribbles;
            ``scribmed cv`` records it in ``run.json`` and its reports.
    """

    def __init__(
        self,
        layout: str,
        root: str | Path,
        class_map: ClassMap,
        cases: Iterable[Case],
        spacing_unit: SpacingUnit = "none",
        meta: Optional[Mapping[str, dict[str, Any]]] = None,
        problems: Sequence[DataError] = (),
        provenance: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if spacing_unit not in ("mm", "none"):
            raise ValueError(f"spacing_unit must be 'mm' or 'none', got {spacing_unit!r}")
        self.layout = layout
        self.root = Path(root)
        self.class_map = class_map
        self.spacing_unit: SpacingUnit = spacing_unit
        self.cases: list[Case] = sorted(cases, key=lambda c: c.case_id)
        self._index: dict[str, int] = {}
        for i, case in enumerate(self.cases):
            if case.case_id in self._index:
                other = self.cases[self._index[case.case_id]]
                raise DataError(
                    case.source, f"duplicate case id {case.case_id!r} (also {other.source})"
                )
            self._index[case.case_id] = i
        meta = dict(meta or {})
        self.meta: dict[str, dict[str, Any]] = {c.case_id: dict(meta.get(c.case_id, {})) for c in self.cases}
        self.problems: list[DataError] = list(problems)
        self.provenance: dict[str, Any] = dict(provenance or {})

    # -- container protocol -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._index

    def __getitem__(self, key: int | str) -> Case:
        """A case by position or by case id (``KeyError`` names the missing id)."""
        if isinstance(key, str):
            try:
                return self.cases[self._index[key]]
            except KeyError:
                raise KeyError(
                    f"case {key!r} is not in the {self.layout} dataset at {self.root} "
                    f"({len(self)} cases, e.g. {_preview(self.case_ids, 3)})"
                ) from None
        return self.cases[key]

    def __repr__(self) -> str:
        return (
            f"Dataset(layout={self.layout!r}, root={str(self.root)!r}, cases={len(self)}, "
            f"patients={len(self.patients)})"
        )

    # -- selection ----------------------------------------------------------------------
    @property
    def case_ids(self) -> list[str]:
        """Case ids in dataset order (sorted)."""
        return [c.case_id for c in self.cases]

    @property
    def patients(self) -> list[str]:
        """Sorted unique patient ids."""
        return patients_of(self.cases)

    def cases_of(self, patient_ids: Iterable[str], *, strict: bool = True) -> list[Case]:
        """The cases (dataset order) of the given patients.

        Args:
            patient_ids: patient ids to select.
            strict: raise ``KeyError`` naming patients the dataset lacks; with ``False`` they
                are skipped.
        """
        wanted = set(patient_ids)
        if strict:
            missing = sorted(wanted - set(self.patients))
            if missing:
                raise KeyError(
                    f"{len(missing)} patient(s) not in the {self.layout} dataset at {self.root}: "
                    f"{_preview(missing)}"
                )
        return [c for c in self.cases if c.patient_id in wanted]

    def subset(self, case_ids: Iterable[str]) -> "Dataset":
        """A new dataset holding only ``case_ids`` (same Case objects, so caches are shared)."""
        ids = list(dict.fromkeys(case_ids))
        missing = [i for i in ids if i not in self._index]
        if missing:
            raise KeyError(
                f"{len(missing)} case(s) not in the {self.layout} dataset at {self.root}: "
                f"{_preview(missing)}"
            )
        return Dataset(
            self.layout,
            self.root,
            self.class_map,
            [self[i] for i in ids],
            self.spacing_unit,
            {i: self.meta[i] for i in ids},
            [],
            self.provenance,
        )

    # -- reporting ----------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What ``scribmed data check`` prints: counts, classes and the spacing unit."""
        return {
            "layout": self.layout,
            "cases": len(self),
            "patients": len(self.patients),
            "classes": self.class_map.to_json(),
            "with_label": sum(1 for c in self.cases if c.has_label),
            "with_scribble": sum(1 for c in self.cases if c.has_scribble),
            "spacing": self.spacing_unit,
            **self._supervision_summary(),
            **({"provenance": self.provenance} if self.provenance else {}),
        }

    def _supervision_summary(self) -> dict[str, Any]:
        """``with_weak`` and per-type ``supervision`` counts, only when the dataset has them."""
        out: dict[str, Any] = {}
        weak = sum(1 for c in self.cases if c.has_weak)
        if weak:
            out["with_weak"] = weak
        stated = [c.supervision for c in self.cases if c.supervision is not None]
        if stated:
            out["supervision"] = {k: stated.count(k) for k in sorted(set(stated))}
        return out

    def validate(self, progress: bool = True, cases: Optional[Sequence[Case]] = None) -> None:
        """Load every case (or the given ``cases``) once and check it; raise the first problem as :class:`DataError`.

        Checks: files readable, required keys, shapes agree, header spacings agree, labels in
        the class map, scribbles in the class map or the ignore value, finite image, spacing
        present when ``spacing_unit == "mm"``, label/scribble presence as listed, weak labels
        (boxes/points) inside the image grid and the class map. Cases that were not cached
        before are released afterwards, so memory stays at one case.
        """
        if self.problems:
            raise self.problems[0]
        selected = list(self.cases if cases is None else cases)
        for case in progress_bar(selected, desc=f"checking {self.layout}", unit="case", disable=not progress):
            was_cached = case._cache is not None
            try:
                arrays = case.load()
                files = self.meta.get(case.case_id, {}).get("files", {})
                check_arrays(
                    files.get("image", case.source),
                    arrays,
                    self.class_map,
                    label_path=files.get("label"),
                    scribble_path=files.get("scribble"),
                )
                if case.has_label and arrays.label is None:
                    raise DataError(case.source, "listed with a label but none was loaded")
                if case.has_scribble and arrays.scribble is None:
                    raise DataError(case.source, "listed with a scribble but none was loaded")
                if self.spacing_unit == "mm":
                    if arrays.spacing is None:
                        raise DataError(case.source, "no voxel spacing although the dataset is in mm")
                    check_spacing_values(case.source, arrays.spacing)
                if case.has_weak:
                    from scribmed.data.weak_labels import check_weak_label

                    weak_source = files.get("weak", case.source)
                    check_weak_label(case.weak, weak_source, self.class_map, arrays.image.shape)
            finally:
                if not was_cached:
                    case.release()
