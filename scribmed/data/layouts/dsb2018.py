"""DSB2018 nuclei (2018 Data Science Bowl, BBBC038): 2D microscopy PNGs with one binary mask PNG per nucleus.

On disk (``root`` holds ``stage1_test/``, or is a folder of ``<id>/`` image folders itself, as
``stage1_train/`` is)::

    stage1_test/<id>/images/<id>.png    RGB / RGBA / grey uint8 image (alpha is dropped)
    stage1_test/<id>/masks/*.png        one binary mask (0/255) per nucleus, optional

A case is one image: ``case_id = patient_id = <id>``, spacing ``None`` (distances in pixels).

- ``image``: float32 in [0, 1] (``uint8 / 255``; 16-bit PNGs ``/ 65535``). ``channels=1``
  (default) gives ``(1, H, W)``: the channel itself when R = G = B (fluorescence), else the
  ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B``; ``channels=3`` keeps RGB as ``(1, 3, H, W)``
  (the project's ``(slices, C, H, W)`` multi-channel convention; grey PNGs are repeated).
- ``instance``: ``(1, H, W)`` int32, 0 background; the masks in natural file-name order (digit
  runs compare as numbers, so ``<id>_2.png`` comes before ``<id>_10.png``; this is the row order
  of the release's ``stage1_solution.csv``) are instances 1, 2, ... A mask that is not binary, is
  empty, has another shape than the image, or overlaps an earlier mask is a one-line DataError
  naming the mask file (and, for an overlap, the earlier mask).
- ``label``: ``(1, H, W)`` uint8 semantic map ``instance > 0`` (:data:`NUCLEI`: 0 background,
  1 nucleus); no scribble.

Listing reads only folder names; pixels are read when a case loads. An image folder without its
``images/<id>.png`` is recorded in ``Dataset.problems``; one without ``masks/`` is an unlabelled case.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from scribmed.data.case import Case, CaseArrays, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.data.split_types import natural_key
from scribmed.data.validation import READ_ERRORS, read_error
from scribmed.runtime.files import atomic_output

NAME = "dsb2018"
#: The release folder ``root`` may hold (else ``root`` is a folder of image folders itself).
STAGE_FOLDER = "stage1_test"
IMAGES, MASKS = "images", "masks"
#: Two classes; the ignore value 2 marks unlabeled pixels of partial (weak) labels.
NUCLEI = ClassMap({0: "background", 1: "nucleus"}, ignore_index=2)
#: ITU-R BT.601 luma weights of R, G, B.
LUMA_601 = (0.299, 0.587, 0.114)
_MASK_RE = re.compile(r"_mask_(\d+)\.png$")


def _open_png(path: Path, what: str) -> np.ndarray:
    """Pixels of a PNG as ``(H, W)`` or ``(H, W, C)``; palette / bilevel images are expanded."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "LA", "RGB", "RGBA") and not img.mode.startswith("I;16"):
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            return np.asarray(img)
    except READ_ERRORS as exc:
        raise read_error(path, f"{what} PNG", exc) from None


def read_image(path: Path, channels: int = 1) -> np.ndarray:
    """One DSB image as float32 in [0, 1]: ``(1, H, W)`` for ``channels=1``, ``(1, 3, H, W)`` for 3."""
    pixels = _open_png(path, "image")
    if pixels.dtype == np.uint8:
        scale = 255.0
    elif pixels.dtype == np.uint16:
        scale = 65535.0
    else:
        raise DataError(path, f"unsupported image pixel type {pixels.dtype} (expected 8- or 16-bit)")
    hwc = pixels[..., None] if pixels.ndim == 2 else pixels
    hwc = hwc[..., :1] if hwc.shape[-1] in (1, 2) else hwc[..., :3]  # drop alpha
    rgb = np.asarray(hwc, dtype=np.float32) / np.float32(scale)
    if channels == 3:
        rgb = np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])
    if rgb.shape[-1] == 1 or (np.array_equal(hwc[..., 0], hwc[..., 1]) and np.array_equal(hwc[..., 1], hwc[..., 2])):
        grey = rgb[..., 0]
    else:
        r, g, b = LUMA_601
        grey = np.clip(r * rgb[..., 0] + g * rgb[..., 1] + b * rgb[..., 2], 0.0, 1.0)
    return np.ascontiguousarray(grey[None], dtype=np.float32)


def read_instances(mask_paths: Sequence[Path], shape: tuple[int, int]) -> np.ndarray:
    """Stack one-mask-per-instance PNGs into an ``(H, W)`` int32 instance map (k-th mask = k).

    Raises:
        DataError: naming the mask file that is unreadable, not binary, empty, of another shape
            than ``shape`` (the image's ``(H, W)``), or overlapping an earlier mask.
    """
    instance = np.zeros(shape, dtype=np.int32)
    for k, path in enumerate(mask_paths, start=1):
        pixels = _open_png(path, "mask")
        if pixels.ndim == 3:
            if not all(np.array_equal(pixels[..., 0], pixels[..., c]) for c in range(1, min(3, pixels.shape[-1]))):
                raise DataError(path, "mask is not binary (its colour channels differ)")
            pixels = pixels[..., 0]
        if pixels.shape != tuple(shape):
            raise DataError(path, f"mask shape {pixels.shape} does not match image shape {tuple(shape)}")
        values = np.unique(pixels)
        if values.size > 2 or (values.size == 2 and values[0] != 0):
            shown = ", ".join(str(int(v)) for v in values[:6]) + (", ..." if values.size > 6 else "")
            raise DataError(path, f"mask is not binary (values {shown}; expected 0 and 255)")
        fg = pixels > 0
        if not fg.any():
            raise DataError(path, "mask is empty (no foreground pixel)")
        taken = instance[fg]
        if taken.any():
            other = int(taken[taken > 0][0])
            n = int(np.count_nonzero(taken))
            raise DataError(path, f"mask overlaps the earlier mask {mask_paths[other - 1].name} ({n} pixel(s))")
        instance[fg] = k
    return instance


def _load(image_path: Path, mask_paths: tuple[Path, ...], channels: int) -> CaseArrays:
    image = read_image(image_path, channels)
    if not mask_paths:
        return CaseArrays(image=image)
    instance = read_instances(mask_paths, image.shape[-2:])[None]
    return CaseArrays(image=image, label=(instance > 0).astype(np.uint8), instance=instance)


def _case_folder(root: Path) -> Path:
    return root / STAGE_FOLDER if (root / STAGE_FOLDER).is_dir() else root


def read_dataset(root: str | Path, *, channels: int = 1, class_map: ClassMap = NUCLEI) -> Dataset:
    """List ``<id>/images/<id>.png`` with their ``masks/*.png`` (no pixel is read).

    Args:
        root: the folder holding ``stage1_test/``, or a folder of ``<id>/`` image folders.
        channels: 1 (grey ``(1, H, W)``, default) or 3 (RGB ``(1, 3, H, W)``).
        class_map: :data:`NUCLEI` (default).
    """
    root = Path(root)
    if channels not in (1, 3):
        raise DataError(root, f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    folder = _case_folder(root)
    cases, meta, problems = [], {}, []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        image = sub / IMAGES / f"{sub.name}.png"
        if not image.is_file():
            if (sub / IMAGES).is_dir() or (sub / MASKS).is_dir():
                problems.append(DataError(sub, f"no {IMAGES}/{sub.name}.png in this image folder"))
            continue
        mask_dir = sub / MASKS
        masks = tuple(sorted((p for p in mask_dir.iterdir() if p.suffix.lower() == ".png" and p.is_file()),
                             key=lambda p: natural_key(p.name))) if mask_dir.is_dir() else ()
        cases.append(Case(
            case_id=sub.name, patient_id=sub.name, source=image,
            loader=partial(_load, image, masks, int(channels)),
            has_label=bool(masks), has_instance=bool(masks),
        ))
        files: dict[str, Path] = {"image": image}
        if masks:
            files["masks"] = mask_dir
        meta[sub.name] = {"files": files, "instances": len(masks)}
    if not cases:
        raise DataError(root, f"no <id>/{IMAGES}/<id>.png image folders found (expected {STAGE_FOLDER}/<id>/...)")
    return Dataset(NAME, root, class_map, cases, "none", meta, problems)


def _to_uint8(image: np.ndarray, case_id: str) -> np.ndarray:
    """Image ``(H, W)``, ``(1, H, W)``, ``(3, H, W)`` or ``(1, 3, H, W)`` -> PNG pixels ``(H, W)`` / ``(H, W, 3)``."""
    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[0] == 3)):
        raise ValueError(f"{case_id}: dsb2018 images are (1, H, W) grey or (1, 3, H, W) RGB, got {np.shape(image)}")
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(np.asarray(arr, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    return arr if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(1, 2, 0))


def _instances_to_write(case_id: str, shape: tuple[int, int], label: Optional[np.ndarray],
                        instance: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """The ``(H, W)`` instance map to store: ``instance``, or the 8-connected components of ``label``."""
    def plane(arr: np.ndarray, what: str) -> np.ndarray:
        a = np.asarray(arr)
        a = a[0] if a.ndim == 3 and a.shape[0] == 1 else a
        if a.shape != shape:
            raise ValueError(f"{case_id}: {what} shape {np.shape(arr)} does not match the image's (1, {shape[0]}, {shape[1]})")
        return a

    lab = None if label is None else plane(label, "label")
    if lab is not None and not np.isin(lab, (0, 1)).all():
        raise ValueError(f"{case_id}: a dsb2018 label holds 0 (background) and 1 (nucleus) only")
    if instance is None:
        return None if lab is None else ndi.label(lab > 0, structure=np.ones((3, 3)))[0]
    inst = plane(instance, "instance map")
    if not np.issubdtype(inst.dtype, np.integer) or (inst.size and inst.min() < 0):
        raise ValueError(f"{case_id}: the instance map must hold integers >= 0 (0 background)")
    if lab is not None and not np.array_equal(lab > 0, inst > 0):
        raise ValueError(f"{case_id}: label and instance map disagree (label must be instance > 0)")
    return inst


def mask_name(case_id: str, k: int, n: int) -> str:
    """File name of the ``k``-th of ``n`` instance masks (zero-padded: plain and natural order agree)."""
    return f"{case_id}_mask_{k:0{max(4, len(str(n)))}d}.png"


def write_case(
    root: str | Path,
    case_id: str,
    patient_id: str,
    image: np.ndarray,
    label: Optional[np.ndarray] = None,
    scribble: Optional[np.ndarray] = None,
    spacing: Optional[Sequence[float]] = None,
    affine: Optional[np.ndarray] = None,
    instance: Optional[np.ndarray] = None,
) -> Path:
    """Write one image as ``root/<case_id>/images/<case_id>.png`` plus one mask PNG (0/255) per instance.

    ``image`` in [0, 1] (or uint8) is stored as 8-bit grey (``(1, H, W)``) or RGB (``(1, 3, H, W)``).
    The instances of ``instance`` (``(1, H, W)`` int, 0 background) go to ``masks/`` in ascending
    id order as ``<case_id>_mask_0001.png``, ... so the reader numbers them 1..n in that order
    (ids that skip values are renumbered). With a ``label`` only (0/1), each 8-connected
    component becomes one instance. ``patient_id`` must equal ``case_id`` (one image per
    patient); ``scribble``, ``spacing`` and ``affine`` are not stored (the layout has none).
    Files are written atomically; masks of an earlier write of the same case are replaced.
    Returns the image path.
    """
    if not case_id or "/" in case_id or "\\" in case_id or case_id.startswith("."):
        raise ValueError(f"invalid case id {case_id!r}")
    if patient_id != case_id:
        raise ValueError(f"dsb2018 has one image per patient: patient_id must equal case_id, got {patient_id!r}")
    pixels = _to_uint8(image, case_id)
    inst = _instances_to_write(case_id, pixels.shape[:2], label, instance)
    folder = Path(root) / case_id
    mask_dir = folder / MASKS
    ids = [] if inst is None else [int(v) for v in np.unique(inst) if v > 0]
    names = {mask_name(case_id, k, len(ids)) for k in range(1, len(ids) + 1)}
    stale = sorted(p for p in mask_dir.glob("*.png") if p.name not in names) if mask_dir.is_dir() else []
    foreign = [p.name for p in stale if not (p.name.startswith(f"{case_id}_mask_") and _MASK_RE.search(p.name))]
    if foreign:
        raise ValueError(f"{mask_dir}: holds other mask files ({foreign[0]}); write into a new folder")
    out = folder / IMAGES / f"{case_id}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
    for old in stale:
        old.unlink()
    if inst is None:
        return out
    mask_dir.mkdir(parents=True, exist_ok=True)
    for k, v in enumerate(ids, start=1):
        with atomic_output(mask_dir / mask_name(case_id, k, len(ids))) as tmp:
            Image.fromarray(np.where(inst == v, 255, 0).astype(np.uint8)).save(tmp, format="PNG")
    return out


__all__ = ["NAME", "NUCLEI", "mask_name", "read_dataset", "read_image", "read_instances", "write_case"]
