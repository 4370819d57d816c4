"""SeSAM point prompts: K random points per connected instance of a mask.

:class:`SeSAMPointsd` is the randomizable dictionary transform (all draws from ``self.R``); the
sampler it calls, :func:`~scribmed.data.sesam_sampling.instance_points` (biased towards each
instance's skeleton), lives in :mod:`scribmed.data.sesam_sampling`.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from scribmed.data.sesam_sampling import instance_points
from scribmed.transforms.prompt_frame import InputSize, to_input_frame
from scribmed.transforms.prompt_packing import PAD_LABEL, _output_keys, _pack
from scribmed.transforms.prompt_points import _as_slice


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
]
