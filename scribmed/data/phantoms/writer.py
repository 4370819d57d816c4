"""Writing phantoms to disk as a dataset in one of the public layouts.

The dataset is built in a temporary sibling folder and renamed into place, with a marker file
(``.scribmed-phantom.json``) recording the parameters, so a complete phantom is reused and
nothing else is ever overwritten. Also the MSCMR subject/subset choice for that layout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from scribmed.data.errors import DataError
from scribmed.data.phantoms.abdominal import generate_abdominal
from scribmed.data.phantoms.cardiac import generate_cardiac
from scribmed.data.phantoms.kinds import KINDS, LAYOUTS_BY_KIND
from scribmed.data.split_protocols import MSCMR_TEST, MSCMR_TRAIN, MSCMR_VAL

MARKER = ".scribmed-phantom.json"
_FORMAT_VERSION = 1


def mscmr_subsets(n_patients: int, include_test: bool = False) -> list[tuple[str, str]]:
    """``(subject id, subset)`` for an MSCMR-layout phantom, taken from the standard split lists.

    Proportional to the standard 25/5(/15) split, with at least one train and one val subject
    (and one TestSet subject when ``include_test``), so ``data_splits/mscmr.json`` applies with
    ``allow_missing``.
    """
    pools = [("train", MSCMR_TRAIN), ("val", MSCMR_VAL)] + ([("TestSet", MSCMR_TEST)] if include_test else [])
    need = len(pools)
    if n_patients < need:
        raise ValueError(f"an mscmr phantom needs at least {need} patients (one per subset), got {n_patients}")
    total = sum(len(p) for _, p in pools)
    if n_patients > total:
        raise ValueError(f"an mscmr phantom holds at most {total} subjects (the standard ids), got {n_patients}")
    counts = [max(1, int(round(n_patients * len(p) / total))) for _, p in pools]
    while sum(counts) > n_patients:
        counts[int(np.argmax(counts))] -= 1
    while sum(counts) < n_patients:
        j = int(np.argmax([len(p) - c for (_, p), c in zip(pools, counts)]))
        counts[j] += 1
    out = []
    for (subset, pool), c in zip(pools, counts):
        out += [(f"subject{n}", subset) for n in pool[:c]]
    return out


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)


def _params(kind: str, layout: str, n_patients: int, seed: int, include_test: bool, gen: dict) -> dict:
    """The marker content, normalised through JSON so it compares equal to a re-read marker."""
    params = {"format": _FORMAT_VERSION, "kind": kind, "layout": layout, "n_patients": n_patients, "seed": seed,
              "include_test": include_test, "options": dict(sorted(gen.items()))}
    return json.loads(json.dumps(params, default=_jsonable))


def _same_phantom(out: Path, params: dict) -> bool:
    try:
        return json.loads((out / MARKER).read_text(encoding="utf-8")) == params
    except (OSError, ValueError):
        return False


def write_phantom_dataset(
    kind: str,
    layout: str,
    out: str | Path,
    n_patients: int,
    seed: int = 0,
    *,
    include_test: bool = False,
    **gen_kwargs: Any,
) -> Path:
    """Generate phantoms and write them in ``layout`` under ``out``; returns the dataset root.

    ``out`` must not exist, be an empty folder, or be a complete phantom written earlier with the
    same parameters (then it is reused as is). Anything else is refused: existing files are never
    overwritten. The dataset is built in a temporary sibling folder and renamed into place, so an
    interrupted run never leaves a half-written dataset that looks complete. A marker file
    ``.scribmed-phantom.json`` records the parameters.

    Args:
        kind: ``"cardiac"`` or ``"abdominal"``.
        layout: ``acdc-h5``, ``acdc-nifti``, ``mscmr``, ``generic`` (cardiac) or ``chaos-npz``,
            ``chaos-t2-nifti`` (T2 only; the reader synthesises the scribbles), ``generic`` (abdominal);
            ``dicom`` for either (one MR series per case, images only).
        out: dataset root to create (for ``acdc-h5`` it holds ``ACDC_training_volumes/``).
        n_patients: number of patients.
        seed: base seed.
        include_test: mscmr only: also write ``TestSet`` subjects (with manual labels).
        **gen_kwargs: passed to :func:`generate_cardiac` / :func:`generate_abdominal`. For mscmr the
            defaults are one frame (ED) and LGE contrast.

    Raises:
        ValueError: unknown kind/layout or a kind-layout pair that makes no sense.
        DataError: ``out`` holds something else.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if layout not in LAYOUTS_BY_KIND[kind]:
        raise ValueError(f"{kind} phantoms can be written as {', '.join(LAYOUTS_BY_KIND[kind])}, not {layout!r}")
    if include_test and layout != "mscmr":
        raise ValueError("include_test applies to the mscmr layout only")
    out = Path(out)
    params = _params(kind, layout, n_patients, seed, include_test, gen_kwargs)
    if out.exists():
        if not out.is_dir():
            raise DataError(out, "exists and is not a folder; choose a new output folder for the phantom")
        if any(out.iterdir()):
            marker = out / MARKER
            try:
                previous = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise DataError(out, "folder is not empty and is not a scribmed phantom; refusing to write into it") from None
            if previous != params:
                raise DataError(out, f"holds a phantom made with other parameters ({marker.name}); use a new folder")
            return out
    from scribmed.data.layouts import (
        write_dataset,  # layouts import data only; keep phantoms importable alone
    )

    subsets: dict[str, str] = {}
    if kind == "cardiac":
        opts = dict(gen_kwargs)
        if layout == "mscmr":
            if "patient_ids" in opts:
                raise ValueError("the mscmr phantom takes its subject ids from the standard split; omit patient_ids")
            pairs = mscmr_subsets(n_patients, include_test)
            subsets = dict(pairs)
            opts.setdefault("frames", ("ED",))
            opts.setdefault("contrast", "lge")
            opts.setdefault("patient_ids", [p for p, _ in pairs])
        cases = generate_cardiac(n_patients, seed, **opts)
    else:
        opts = dict(gen_kwargs)
        if layout == "chaos-t2-nifti":  # one T2 volume per patient, no scribble stored (the reader synthesises)
            opts.setdefault("modalities", ("T2",))
            opts["scribbles"] = False
        cases = generate_abdominal(n_patients, seed, **opts)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        def items():
            for c in cases:
                item = {"case_id": c.patient_id if layout == "mscmr" else c.case_id, "patient_id": c.patient_id,
                        "image": c.image, "label": c.label, "scribble": c.scribble, "spacing": c.spacing}
                if layout == "mscmr":
                    item["subset"] = subsets[c.patient_id]
                if layout == "generic":
                    item["class_map"] = c.class_map
                yield item

        write_dataset(layout, tmp, items())
        (tmp / MARKER).write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
        try:
            if out.exists():
                out.rmdir()  # empty (checked above); rename needs the name free on every platform
            os.replace(tmp, out)
        except OSError:
            # another process finished the same phantom first: use it; anything else is an error
            if _same_phantom(out, params):
                shutil.rmtree(tmp, ignore_errors=True)
                return out
            raise DataError(out, "was filled by someone else while the phantom was being written") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


__all__ = [
    "MARKER",
    "mscmr_subsets",
    "write_phantom_dataset",
]
