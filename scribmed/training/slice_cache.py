"""Every 2D slice of the training cases, resized once to the network size and held in memory.

DMPLS trains on whole slices resized to 256x256. Resizing (and reading HDF5/NIfTI) on every
draw would make the data pipeline the bottleneck on a GPU; the cache does it once per run, so a
training sample is an array lookup plus one augmentation. ACDC's 1902 training slices take about
0.6 GB as float32 images + uint8 scribbles.

Images are resized bilinearly, scribbles/labels/pseudo labels with nearest neighbour, using the
same :func:`scribmed.transforms.resize.resize_slices` as inference, so train and test inputs
match. Slices whose scribble has no labelled pixel are kept: they contribute to the pseudo-label
Dice term even though their partial cross-entropy is empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np

from scribmed.data.case import Case
from scribmed.data.errors import DataError
from scribmed.runtime.progress import progress_bar
from scribmed.transforms.resize import resize_slices

__all__ = ["SliceCache"]

_LABEL_KEYS = ("scribble", "label", "pseudo")


@dataclass
class SliceCache:
    """Contiguous in-memory arrays of resized slices.

    Attributes:
        image: ``(N, C, h, w)`` float32 (C = 1 for MRI).
        scribble / label / pseudo: ``(N, h, w)`` uint8, or ``None`` when not cached.
        index: ``(case_id, slice_index)`` of each of the N slices, in case order.
        size: ``(h, w)`` the slices were resized to.
        extras: further ``(N, h, w)`` uint8 label-like arrays by name (e.g. mixed supervision's
            weak target, box masks, SAM pseudo label), read with :meth:`array`.
        codes: optional ``(N,)`` int64 per-slice integer (e.g. the case's supervision type code).
    """

    image: np.ndarray
    index: list[tuple[str, int]]
    size: tuple[int, int]
    scribble: Optional[np.ndarray] = None
    label: Optional[np.ndarray] = None
    pseudo: Optional[np.ndarray] = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    codes: Optional[np.ndarray] = None
    _by_case: dict[str, range] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = len(self.index)
        if self.image.shape[0] != n:
            raise ValueError(f"image holds {self.image.shape[0]} slices but the index has {n}")
        for key in _LABEL_KEYS:
            arr = getattr(self, key)
            if arr is not None and arr.shape[0] != n:
                raise ValueError(f"{key} holds {arr.shape[0]} slices but the index has {n}")
        for key, arr in self.extras.items():
            if key in _LABEL_KEYS or key == "image":
                raise ValueError(f"extra array {key!r} shadows a built-in cache array")
            if arr.shape[0] != n:
                raise ValueError(f"extra {key!r} holds {arr.shape[0]} slices but the index has {n}")
        if self.codes is not None and self.codes.shape != (n,):
            raise ValueError(f"codes have shape {self.codes.shape}, expected ({n},)")
        if not self._by_case:
            start = 0
            while start < n:
                cid = self.index[start][0]
                stop = start
                while stop < n and self.index[stop][0] == cid:
                    stop += 1
                self._by_case[cid] = range(start, stop)
                start = stop

    def __len__(self) -> int:
        return len(self.index)

    @property
    def case_ids(self) -> list[str]:
        """Case ids in cache order."""
        return list(self._by_case)

    def slices_of(self, case_id: str) -> range:
        """Cache rows holding ``case_id``'s slices (in slice order)."""
        try:
            return self._by_case[case_id]
        except KeyError:
            raise KeyError(f"case {case_id!r} is not in the slice cache") from None

    def nbytes(self) -> int:
        """Memory held by the arrays, in bytes."""
        arrays = (self.image, self.scribble, self.label, self.pseudo, self.codes, *self.extras.values())
        return sum(a.nbytes for a in arrays if a is not None)

    def array(self, key: str) -> Optional[np.ndarray]:
        """The per-slice array ``key``: ``image``, ``scribble``, ``label``, ``pseudo`` or an extra (``None`` if absent)."""
        if key in ("image", *_LABEL_KEYS):
            return getattr(self, key)
        return self.extras.get(key)

    @classmethod
    def from_cases(
        cls,
        cases: Sequence[Case],
        size: Sequence[int] = (256, 256),
        keys: Sequence[str] = ("image", "scribble"),
        pseudo: Optional[Mapping[str, np.ndarray]] = None,
        progress: bool = True,
        release: bool = False,
        image_mode: str = "bilinear",
        extras: Optional[Mapping[str, Mapping[str, np.ndarray]]] = None,
        sparse: Sequence[str] = (),
        ignore_index: Optional[int] = None,
        codes: Optional[Mapping[str, int]] = None,
    ) -> "SliceCache":
        """Load each case once and resize all its slices.

        Args:
            cases: the cases to cache (e.g. a fold's training cases).
            size: network input ``(h, w)``.
            keys: arrays to cache; ``"image"`` is always cached, add ``"scribble"`` and/or
                ``"label"``.
            pseudo: optional pseudo labels by case id, each ``(slices, H, W)`` on the case's grid
                (e.g. SAM pseudo labels); cached nearest-resized as ``pseudo``.
            progress: show a progress bar over cases.
            release: drop each case's loaded arrays after caching (saves memory when the
                cases are not needed again).
            image_mode: image resizing, ``"bilinear"`` (antialiased) or ``"nearest"`` (WSL4MIS).
            extras: ``{name: {case_id: (slices, H, W) integer map}}`` for every case, cached
                nearest-resized as :attr:`extras` (values 0..255).
            sparse: extras that are sparse annotations (ignore value where unlabelled): resized
                so that no labelled pixel is lost when a slice shrinks
                (:func:`scribmed.transforms.sparse_resize.resize_scribble`); needs ``ignore_index``.
            codes: ``{case_id: int}``: every slice of the case gets the case's code in :attr:`codes`.

        Returns:
            The cache.

        Raises:
            DataError: a case lacks a requested array, has a non-3D image, label values that do
                not fit uint8, or a pseudo label of the wrong shape; ``cases`` is empty.
        """
        hw = (int(size[0]), int(size[1]))
        unknown = set(keys) - {"image", *_LABEL_KEYS[:2]}
        if unknown:
            raise ValueError(f"unknown cache keys {sorted(unknown)}; use 'image', 'scribble', 'label'")
        if not cases:
            raise DataError(None, "no cases to cache: the training set is empty")
        label_keys = [k for k in ("scribble", "label") if k in keys]
        images: list[np.ndarray] = []
        labels: dict[str, list[np.ndarray]] = {k: [] for k in label_keys}
        pseudos: list[np.ndarray] = []
        extra_maps = dict(extras or {})
        if set(sparse) - set(extra_maps):
            raise ValueError(f"sparse names {sorted(set(sparse) - set(extra_maps))} are not extras")
        if sparse and ignore_index is None:
            raise ValueError("sparse extras need ignore_index")
        extra_rows: dict[str, list[np.ndarray]] = {k: [] for k in extra_maps}
        code_rows: list[np.ndarray] = []
        index: list[tuple[str, int]] = []
        for case in progress_bar(cases, desc="caching slices", unit="case", leave=False, disable=not progress):
            img = np.asarray(case.image)
            if img.ndim == 3:
                img = img[:, None]
            if img.ndim != 4:
                raise DataError(case.source, f"expected an image (slices, H, W), got shape {img.shape}")
            n_slices, spatial = img.shape[0], img.shape[-2:]
            images.append(np.ascontiguousarray(resize_slices(img.astype(np.float32, copy=False), hw, image_mode)))
            for key in label_keys:
                arr = getattr(case, key)
                if arr is None:
                    raise DataError(case.source, f"case {case.case_id} has no {key}, needed for training")
                labels[key].append(_resize_label(case, key, arr, n_slices, spatial, hw))
            if pseudo is not None:
                if case.case_id not in pseudo:
                    raise DataError(case.source, f"no pseudo label given for case {case.case_id}")
                pseudos.append(_resize_label(case, "pseudo label", pseudo[case.case_id], n_slices, spatial, hw))
            for name, maps in extra_maps.items():
                if case.case_id not in maps:
                    raise DataError(case.source, f"no {name} map given for case {case.case_id}")
                if name in sparse:
                    extra_rows[name].append(_resize_sparse(case, name, maps[case.case_id], n_slices, spatial, hw,
                                                           int(ignore_index)))  # type: ignore[arg-type]
                else:
                    extra_rows[name].append(_resize_label(case, name, maps[case.case_id], n_slices, spatial, hw))
            if codes is not None:
                if case.case_id not in codes:
                    raise DataError(case.source, f"no code given for case {case.case_id}")
                code_rows.append(np.full(n_slices, int(codes[case.case_id]), dtype=np.int64))
            index.extend((case.case_id, z) for z in range(n_slices))
            if release:
                case.release()
        return cls(
            image=np.concatenate(images),
            index=index,
            size=hw,
            scribble=np.concatenate(labels["scribble"]) if "scribble" in labels else None,
            label=np.concatenate(labels["label"]) if "label" in labels else None,
            pseudo=np.concatenate(pseudos) if pseudo is not None else None,
            extras={k: np.concatenate(v) for k, v in extra_rows.items()},
            codes=np.concatenate(code_rows) if codes is not None else None,
        )


def _checked_uint8(case: Case, what: str, arr: np.ndarray, n_slices: int, spatial: tuple[int, ...]) -> np.ndarray:
    """``arr`` as uint8 after checking it has the image's shape and values in 0..255."""
    arr = np.asarray(arr)
    if arr.shape != (n_slices, *spatial):
        raise DataError(case.source, f"{what} shape {arr.shape} differs from the image's {(n_slices, *spatial)}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise DataError(case.source, f"{what} values must lie in 0..255, got {arr.min()}..{arr.max()}")
    return arr.astype(np.uint8, copy=False)


def _resize_label(
    case: Case, what: str, arr: np.ndarray, n_slices: int, spatial: tuple[int, ...], hw: tuple[int, int]
) -> np.ndarray:
    lab = _checked_uint8(case, what, arr, n_slices, spatial)
    return np.ascontiguousarray(resize_slices(lab, hw, "nearest"))


def _resize_sparse(
    case: Case, what: str, arr: np.ndarray, n_slices: int, spatial: tuple[int, ...], hw: tuple[int, int],
    ignore_index: int,
) -> np.ndarray:
    """A sparse map resized slice by slice without losing a labelled pixel (values 0..255)."""
    from scribmed.transforms.sparse_resize import resize_scribble

    lab = _checked_uint8(case, what, arr, n_slices, spatial)
    return np.ascontiguousarray(np.stack([resize_scribble(lab[z], hw, ignore_index) for z in range(n_slices)]))
