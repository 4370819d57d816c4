"""S4M stochastic point prompts: K points per instance drawn from a probability map.

S4M refines a teacher's instance masks by prompting SAM with ``K`` (= 3) positive points per
instance, drawn at random from the teacher's own (softmaxed) mask probability restricted to that
instance's mask: confident pixels are likelier prompts, yet the draw differs between iterations.

:func:`sample_instance_points` is the function; :class:`StochasticInstancePoints` /
:class:`StochasticInstancePointsd` are the randomizable array and dictionary transforms (one
draw from ``self.R`` per call, so ``set_random_state`` makes them reproducible).

Coordinates are ``(x, y) = (column, row)`` pixels of the given slice (map them into SAM's input
frame with ``backend.to_input_coords``).
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform

from scribmed.transforms.prompt_points import _as_slice

Rng = np.random.RandomState | np.random.Generator

__all__ = [
    "StochasticInstancePoints",
    "StochasticInstancePointsd",
    "sample_instance_points",
]


def _rng(rng: Rng | int | None) -> Rng:
    if isinstance(rng, (np.random.RandomState, np.random.Generator)):
        return rng
    return np.random.default_rng(rng)


def _instance_ids(instance: np.ndarray, ids: Sequence[int] | np.ndarray | None) -> np.ndarray:
    present = np.unique(instance)
    present = present[present > 0].astype(np.int64)
    if ids is None:
        return present
    out = np.asarray(ids, dtype=np.int64).reshape(-1)
    missing = np.setdiff1d(out, present)
    if missing.size:
        raise ValueError(f"instance ids {missing.tolist()} are not in the instance map (present: {present.tolist()})")
    return out


def _draw(weight: np.ndarray, k: int, gen: Rng) -> np.ndarray:
    """``k`` indices into ``weight`` (one instance's pixels), probability proportional to ``weight``.

    Without replacement when the instance has ``>= k`` pixels. When fewer than ``k`` pixels have a
    positive weight, all of those are taken and the rest are drawn uniformly from the others;
    an all-zero instance is drawn uniformly.
    """
    n = weight.size
    if n < k:  # too small: with replacement (uniform when the weights vanish)
        total = weight.sum()
        return gen.choice(n, size=k, replace=True, p=weight / total if total > 0 else None)
    positive = np.flatnonzero(weight > 0)
    if positive.size >= k:
        return gen.choice(n, size=k, replace=False, p=weight / weight.sum())
    rest = np.flatnonzero(weight <= 0)
    extra = gen.choice(rest.size, size=k - positive.size, replace=False)
    return np.concatenate([positive[gen.permutation(positive.size)], rest[extra]])


def sample_instance_points(
    prob: Any,
    instance: Any,
    k: int = 3,
    rng: Rng | int | None = None,
    ids: Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S4M's random positive points: ``k`` per instance, likelier where ``prob`` is high.

    For each instance ``i`` the ``k`` points are pixels of its mask ``instance == i`` drawn with
    probability proportional to ``prob`` on that mask: without replacement, or with replacement
    when the instance has fewer than ``k`` pixels. A mask whose probabilities sum to 0 is drawn
    uniformly (when only some pixels are 0, those fill in once the positive ones run out).

    Args:
        prob: ``(H, W)`` or ``(1, H, W)`` float map ``>= 0`` (e.g. the teacher's foreground
            probability), array or tensor.
        instance: ``(H, W)`` or ``(1, H, W)`` int instance map (0 background, ``i > 0`` instance
            ``i``; negative values are ignored).
        k: points per instance (S4M: 3).
        rng: ``np.random.RandomState`` (a transform's ``self.R``), ``Generator`` or seed.
        ids: instances to sample, in this order (default: every id present, ascending).

    Returns:
        ``(coords, labels, ids)``: float32 ``(N, k, 2)`` ``(x, y)`` pixels, int64 ``(N, k)`` labels
        (all 1, positive) and int64 ``(N,)`` instance ids, one row per instance.

    Raises:
        ValueError: ``k < 1``; shapes differ; ``prob`` negative or not finite; an id not present.
    """
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = int(k)
    p = _as_slice(prob, "prob").astype(np.float64)
    inst = _as_slice(instance, "instance")
    if p.shape != inst.shape:
        raise ValueError(f"prob {p.shape} and instance {inst.shape} must have the same (H, W)")
    if not np.isfinite(p).all():
        raise ValueError("prob contains NaN or infinite values")
    if (p < 0).any():
        raise ValueError(f"prob must be >= 0, got minimum {float(p.min())}")
    inst = inst.astype(np.int64, copy=False)
    wanted = _instance_ids(inst, ids)
    gen = _rng(rng)
    coords = np.zeros((wanted.size, k, 2), dtype=np.float32)
    flat_inst, flat_p = inst.ravel(), p.ravel()
    width = inst.shape[1]
    for row, i in enumerate(wanted):
        pix = np.flatnonzero(flat_inst == i)
        chosen = pix[_draw(flat_p[pix], k, gen)]
        coords[row, :, 0] = chosen % width  # x = column
        coords[row, :, 1] = chosen // width  # y = row
    return coords, np.ones((wanted.size, k), dtype=np.int64), wanted


class StochasticInstancePoints(Randomizable, Transform):
    """Array transform: ``(prob, instance)`` → ``(coords, labels, ids)`` of :func:`sample_instance_points`.

    The draw comes from ``self.R`` during the one ``randomize`` per call.

    Args:
        k: points per instance (S4M: 3).
    """

    def __init__(self, k: int = 3) -> None:
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self._drawn: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def randomize(self, prob: Any, instance: Any) -> None:
        """Draw the points of every instance of ``instance`` from ``self.R``."""
        self._drawn = sample_instance_points(prob, instance, self.k, self.R)

    def __call__(self, prob: Any, instance: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.randomize(prob, instance)
        assert self._drawn is not None
        return self._drawn


class StochasticInstancePointsd(Randomizable, MapTransform):
    """Dictionary version of :class:`StochasticInstancePoints`.

    Reads ``d[prob_key]`` and ``d[instance_key]`` (``(H, W)`` or ``(1, H, W)``) and writes numpy
    ``d[coords_key]`` float32 ``(N, k, 2)`` ``(x, y)``, ``d[labels_key]`` int64 ``(N, k)`` (all 1)
    and ``d[ids_key]`` int64 ``(N,)``. One draw from ``self.R`` per call.

    Args:
        prob_key: key of the probability map (``>= 0``).
        instance_key: key of the instance map.
        k: points per instance (S4M: 3).
        coords_key, labels_key, ids_key: output keys.
        allow_missing_keys: leave the dict unchanged when an input key is absent.
    """

    def __init__(
        self,
        prob_key: str = "prob",
        instance_key: str = "instance",
        k: int = 3,
        coords_key: str = "point_coords",
        labels_key: str = "point_labels",
        ids_key: str = "point_ids",
        allow_missing_keys: bool = False,
    ) -> None:
        keys: KeysCollection = (prob_key, instance_key)
        MapTransform.__init__(self, keys, allow_missing_keys)
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.prob_key, self.instance_key = prob_key, instance_key
        self.k = int(k)
        self.coords_key, self.labels_key, self.ids_key = coords_key, labels_key, ids_key
        self._drawn: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def randomize(self, prob: Any, instance: Any) -> None:
        """Draw the points of every instance from ``self.R``."""
        self._drawn = sample_instance_points(prob, instance, self.k, self.R)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.prob_key not in d or self.instance_key not in d:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"StochasticInstancePointsd needs keys {self.prob_key!r} and {self.instance_key!r}; "
                           f"got {sorted(map(str, d))}")
        self.randomize(d[self.prob_key], d[self.instance_key])
        assert self._drawn is not None
        d[self.coords_key], d[self.labels_key], d[self.ids_key] = self._drawn
        return d
