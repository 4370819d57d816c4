"""SeSAM point prompts (DESIGN.md Sec. 4.4): K random points per connected instance of a mask.

:func:`instance_points` draws them, biased towards each instance's skeleton;
:class:`SeSAMPointsd` is the randomizable dictionary transform (all draws from ``self.R``).
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from scipy import ndimage as ndi

from scribmed.transforms.instance_split import split_instances
from scribmed.transforms.prompt_frame import InputSize, to_input_frame
from scribmed.transforms.prompt_packing import PAD_LABEL, _output_keys, _pack
from scribmed.transforms.prompt_points import _as_slice, _xy

Rng = np.random.RandomState | np.random.Generator


def _rng(rng: Rng | int | None) -> Rng:
    if isinstance(rng, (np.random.RandomState, np.random.Generator)):
        return rng
    return np.random.default_rng(rng)


def instance_points(
    mask_2d: Any, k: int = 5, rng: Rng | int | None = None, connectivity: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """SeSAM's K random points per connected instance of a binary mask.

    Per instance of area A: its bounding box is covered by square cells of side ``sqrt(A / K)``;
    ``K`` of the cells that hold instance pixels are chosen at random (all of them, plus repeats,
    when fewer exist), and in each a pixel of the instance is drawn with probability proportional
    to the instance's distance transform normalised to [0, 1] (the skeleton is likeliest). Points
    are distinct; an instance with fewer than ``K`` pixels gives all of them.

    Args:
        mask_2d: ``(H, W)`` (or ``(1, H, W)``) binary mask of one class.
        k: points per instance.
        rng: ``np.random.RandomState`` (e.g. a transform's ``self.R``), ``Generator`` or seed.
        connectivity: 1 (4-connected) or 2 (8-connected) instances.

    Returns:
        ``(points, instance)``: float32 ``(N, 2)`` ``(x, y)`` points and int64 ``(N,)`` instance
        number (1-based, raster order of the instances' first pixels, as
        :func:`~scribmed.transforms.instance_split.split_instances` numbers them).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity}")
    gen = _rng(rng)
    labels, _ = split_instances(mask_2d, connectivity)
    pts, inst = [], []
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        local = labels[box] == i
        pix = np.argwhere(local)
        dist = ndi.distance_transform_edt(np.pad(local, 1))[1:-1, 1:-1]
        weight = dist[pix[:, 0], pix[:, 1]] / dist.max()
        chosen = _instance_draw(pix, weight, k, gen)
        pts.append(chosen + np.array([box[0].start, box[1].start]))
        inst.append(np.full(len(chosen), i, dtype=np.int64))
    if not pts:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    return _xy(np.concatenate(pts)), np.concatenate(inst)


def _instance_draw(pix: np.ndarray, weight: np.ndarray, k: int, gen: Rng) -> np.ndarray:
    """Pick ``min(k, len(pix))`` distinct (row, col) pixels of one instance (SeSAM grid rule)."""
    area = len(pix)
    if area <= k:
        return pix
    side = math.sqrt(area / k)
    cell = (pix // side).astype(np.int64)
    cell_id = cell[:, 0] * (int(cell[:, 1].max()) + 1) + cell[:, 1]
    cells = np.unique(cell_id)
    if len(cells) >= k:
        picked = cells[gen.choice(len(cells), size=k, replace=False)]
    else:
        extra = cells[gen.choice(len(cells), size=k - len(cells), replace=True)]
        picked = np.concatenate([cells[gen.permutation(len(cells))], extra])
    taken = np.zeros(area, dtype=bool)
    out = []
    for c in picked:
        idx = np.nonzero((cell_id == c) & ~taken)[0]
        if idx.size == 0:  # a repeated cell ran out of pixels: use any free pixel
            idx = np.nonzero(~taken)[0]
        p = weight[idx] / weight[idx].sum()
        j = int(idx[gen.choice(idx.size, p=p)])
        taken[j] = True
        out.append(pix[j])
    return np.asarray(out)


class SeSAMPointsd(Randomizable, MapTransform):
    """Random SeSAM point prompts: ``k`` points per connected instance of each class.

    Reads a label map (mask, coarse mask or dense weak label) and writes ``d[output_key]``:

    - ``"classes"``: ``list[int]``, the class of each prompt row (one row per instance);
    - ``"instances"``: ``list[int]``, the instance number within its class (1-based);
    - ``"point_coords"``: float32 ``(I, P, 2)`` ``(x, y)``; ``"point_labels"``: int32 ``(I, P)``,
      1 or -1 padding (instances smaller than ``k`` pixels);
    - ``"original_size"``, ``"input_size"`` as :class:`ScribblePromptsd`.

    All draws come from ``self.R`` during the one ``randomize`` per call, so
    ``set_random_state`` makes the output reproducible.

    Args:
        keys: label map key(s), ``(H, W)`` or ``(1, H, W)``.
        k: points per instance (SeSAM: 5).
        classes: classes to prompt (default: every non-zero value present except
            ``ignore_index``).
        ignore_index: a value that is not a class (e.g. a scribble's unlabeled value).
        connectivity: 1 or 2 (8-connected instances).
        input_size: SAM's input size; ``None`` keeps pixels.
        output_key: output key(s), one per key.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection = ("label",),
        k: int = 5,
        classes: Sequence[int] | None = None,
        ignore_index: int | None = None,
        connectivity: int = 2,
        input_size: InputSize | None = None,
        output_key: str | Sequence[str] = "sesam_prompts",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.ignore_index = ignore_index
        self.connectivity = int(connectivity)
        self.input_size = input_size
        self.output_keys = _output_keys(self.keys, output_key)
        self._drawn: list[dict[str, Any]] = []

    def _classes_of(self, label: np.ndarray) -> list[int]:
        if self.classes is not None:
            return self.classes
        return [int(v) for v in np.unique(label) if v != 0 and v != self.ignore_index]

    def randomize(self, data: Sequence[np.ndarray]) -> None:
        """Draw the points for each label slice in ``data`` (one entry per key) from ``self.R``."""
        self._drawn = []
        for label in data:
            classes, instances, rows = [], [], []
            for c in self._classes_of(label):
                pts, inst = instance_points(label == c, self.k, self.R, self.connectivity)
                for i in np.unique(inst):
                    sel = pts[inst == i]
                    classes.append(c)
                    instances.append(int(i))
                    rows.append((sel, np.ones(len(sel), np.int32)))
            coords, labels = _pack(rows)
            hw = (int(label.shape[0]), int(label.shape[1]))
            if self.input_size is not None:
                valid = labels != PAD_LABEL
                coords[valid] = to_input_frame(coords[valid], hw, self.input_size)
            self._drawn.append(
                {
                    "classes": classes,
                    "instances": instances,
                    "point_coords": coords,
                    "point_labels": labels,
                    "original_size": hw,
                    "input_size": self.input_size,
                }
            )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        pairs = list(self.key_iterator(d, self.output_keys))
        self.randomize([_as_slice(d[key], "label") for key, _ in pairs])
        for (_, out), prompt in zip(pairs, self._drawn):
            d[out] = prompt
        return d


__all__ = [
    "SeSAMPointsd",
    "instance_points",
]
