"""CHAOS MR T2-SPIR as redistributed preprocessed (the Q-Net / SSL-ALPNet layout), scribbles synthesised.

On disk (``root`` is the folder holding ``chaos_MR_T2_normalized/``, or that folder itself)::

    chaos_MR_T2_normalized/image_N.nii.gz   T2-SPIR volume of CHAOS patient N (float)
    chaos_MR_T2_normalized/label_N.nii.gz   full label, stored as float: 0 bg, 1 liver,
                                            2 right kidney, 3 left kidney, 4 spleen

case id ``T2_patientNN`` (two digits, as the CHAOS splits name patients), patient id
``patientNN``, spacing from the image header (mm). A label holding anything but the whole
numbers 0-4 is a one-line error naming the file.

The release has **no scribbles**. Unless ``scribbles="none"``, every case gets scribbles
synthesised from its label by :func:`scribmed.data.scribble_synthesis.synthesize_scribbles` with
``ABDOMINAL_STYLE`` (``scribble_style="abdominal"``: strokes inside the liver, kidneys and spleen; background strokes kept
inside the body) or ScribbleBench's style (``scribble_style="scribblebench"``), seeded per case from ``scribble_seed`` and the case id, so the same seed gives
the same scribbles in every process. ``Dataset.provenance["scribbles"]`` records that they are
synthetic (method, style, seed); ``scribmed cv`` copies it into ``run.json`` and every report.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from scribmed.data.case import ABDOMINAL, Case, CaseArrays, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.data.nifti import load_nifti_case, write_nifti
from scribmed.data.validation import check_shapes

NAME = "chaos-t2-nifti"
FOLDER = "chaos_MR_T2_normalized"
_FILE_RE = re.compile(r"^(?P<kind>image|label)_(?P<n>\d+)\.nii(\.gz)?$")

ScribbleMode = Literal["synthetic", "none"]


def case_id_of(n: int) -> str:
    """CHAOS patient number -> case id ``T2_patientNN``."""
    return f"T2_patient{int(n):02d}"


def body_mask(image: np.ndarray) -> np.ndarray:
    """Where background strokes may go: the body (image above 2 % of its range, holes filled, per slice)."""
    img = np.asarray(image, dtype=np.float32)
    lo, hi = float(img.min()), float(img.max())
    fg = img > lo + 0.02 * (hi - lo)
    out = np.zeros(img.shape, dtype=bool)
    for z in range(img.shape[0]):
        out[z] = ndi.binary_fill_holes(ndi.binary_opening(fg[z], iterations=2))
    return out


def scribble_seed_of(seed: int, case_id: str) -> int:
    """The per-case synthesis seed: independent of listing order and process."""
    return int(seed) * 1_000_003 + zlib.crc32(case_id.encode("utf-8"))


def _load(image: Path, label: Path, class_map: ClassMap, scribbles: ScribbleMode, seed: int,
          case_id: str, style: str = "abdominal") -> CaseArrays:
    arrays = load_nifti_case(image, label)
    lab = arrays.label
    bad = np.setdiff1d(np.unique(lab), np.asarray(sorted(class_map.names)))
    if bad.size:
        raise DataError(label, f"label values {', '.join(str(int(v)) for v in bad[:5])} are not CHAOS classes "
                        f"({', '.join(f'{k} {n}' for k, n in class_map.names.items())})")
    scribble = None
    if scribbles == "synthetic":
        from scribmed.data.scribble_synthesis import named_style, synthesize_scribbles  # skimage: on use

        scribble = synthesize_scribbles(
            lab, class_map, seed=scribble_seed_of(seed, case_id), style=named_style(style),
            background_region=body_mask(arrays.image),
        )
    return CaseArrays(image=arrays.image, label=lab, scribble=scribble, spacing=arrays.spacing,
                      affine=arrays.affine)


def read_dataset(
    root: str | Path,
    *,
    class_map: ClassMap = ABDOMINAL,
    scribbles: ScribbleMode = "synthetic",
    scribble_seed: int = 0,
    scribble_style: str = "abdominal",
) -> Dataset:
    """List the image/label pairs (no voxel data is read).

    Args:
        root: the folder holding ``chaos_MR_T2_normalized/`` (or that folder).
        class_map: CHAOS's (default).
        scribbles: ``"synthetic"`` (default: synthesised from the labels when a case loads) or
            ``"none"``.
        scribble_seed: seed of the synthesis.
        scribble_style: a name in :data:`~scribmed.data.scribble_synthesis.SCRIBBLE_STYLES`:
            ``abdominal`` (default: ACDC-like arcs sized for abdominal organs) or
            ``scribblebench`` (interior curves, partial boundaries, some slices left out).

    A label without its image (or an image without its label) is recorded in
    ``Dataset.problems``.
    """
    if scribbles not in ("synthetic", "none"):
        raise DataError(root, f"scribbles must be 'synthetic' or 'none', got {scribbles!r}")
    from scribmed.data.scribble_synthesis import SCRIBBLE_STYLES

    if scribble_style not in SCRIBBLE_STYLES:
        raise DataError(root, f"unknown scribble style {scribble_style!r}; known: {', '.join(SCRIBBLE_STYLES)}")
    root = Path(root)
    folder = root / FOLDER if (root / FOLDER).is_dir() else root
    files: dict[int, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        m = _FILE_RE.match(path.name)
        if m and path.is_file():
            files.setdefault(int(m.group("n")), {})[m.group("kind")] = path
    if not files:
        raise DataError(root, f"no {FOLDER}/image_N.nii.gz files found")
    cases, meta, problems = [], {}, []
    for n, pair in sorted(files.items()):
        if "image" not in pair or "label" not in pair:
            have = pair.get("image") or pair.get("label")
            missing = "label" if "image" in pair else "image"
            problems.append(DataError(have, f"no {missing}_{n}.nii.gz beside it"))
            continue
        cid = case_id_of(n)
        cases.append(Case(
            case_id=cid, patient_id=f"patient{n:02d}", source=pair["image"],
            loader=partial(_load, pair["image"], pair["label"], class_map, scribbles, int(scribble_seed), cid,
                           scribble_style),
            has_label=True, has_scribble=scribbles == "synthetic",
        ))
        meta[cid] = {"files": dict(pair), "scribble": "synthetic" if scribbles == "synthetic" else None}
    if not cases:
        raise DataError(root, "no complete image_N / label_N pair")
    provenance = {}
    if scribbles == "synthetic":
        provenance["scribbles"] = {
            "synthetic": True,
            "method": "scribmed.data.scribble_synthesis.synthesize_scribbles",
            "style": scribble_style,
            "style_values": json.loads(json.dumps(asdict(SCRIBBLE_STYLES[scribble_style]))),
            "seed": int(scribble_seed), "per_case_seed": "seed * 1000003 + crc32(case_id)",
            "background_region": "body mask (image > 2 % of range, opened, holes filled)",
            "note": "CHAOS T2 as redistributed has no scribbles; these were synthesised from the full labels",
        }
    return Dataset(NAME, root, class_map, cases, "mm", meta, problems, provenance=provenance)


def write_case(
    root: str | Path,
    case_id: str,
    patient_id: str,
    image: np.ndarray,
    label: Optional[np.ndarray] = None,
    scribble: Optional[np.ndarray] = None,
    spacing: Optional[Sequence[float]] = None,
    affine: Optional[np.ndarray] = None,
) -> Path:
    """Write one case as ``chaos_MR_T2_normalized/image_N`` / ``label_N`` (label stored as float, as released).

    ``patient_id`` must be ``patientN``; the scribble is not written (the layout has none).
    """
    m = re.fullmatch(r"patient(\d+)", str(patient_id))
    if m is None:
        raise ValueError(f"chaos-t2-nifti patient ids are 'patientN', got {patient_id!r}")
    if label is None:
        raise ValueError("chaos-t2-nifti stores a full label with every image")
    check_shapes(case_id, np.asarray(image), label, None)
    n = int(m.group(1))
    folder = Path(root) / FOLDER
    out = write_nifti(folder / f"image_{n}.nii.gz", np.asarray(image, np.float32), spacing, affine)
    write_nifti(folder / f"label_{n}.nii.gz", np.asarray(label, np.float32), spacing, affine)
    return out
