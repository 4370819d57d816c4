"""Training batches of the instance recipes: random crops of whole images held in memory.

Every iteration draws ``batch_size`` images, a random ``patch`` x ``patch`` crop of each
(reflect-padded when smaller), a random flip and rot90 — the same geometry for the image and
every per-pixel map — then an optional recipe ``mix`` step on the batch (S4M's copy-paste).
:class:`CropBatchDataset` builds the batch of iteration ``i`` from ``(seed, i)`` alone, so a
resumed run draws what an uninterrupted one would; it is loaded with ``batch_size=None`` and an
:class:`~scribmed.training.sampling.IterationSampler`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["BatchMix", "CropBatchDataset", "TrainSample", "collate", "sample_batch"]

_AUG_TAG = 0x1A57

#: a recipe's batch step after cropping: ``mix(items, rng) -> items`` (e.g. S4M's ARP copy-paste)
BatchMix = Callable[[list[dict[str, np.ndarray]], np.random.Generator], list[dict[str, np.ndarray]]]


@dataclass
class TrainSample:
    """One training image and its per-pixel maps, all on the image's grid.

    Attributes:
        case_id: the image's case id.
        image: ``(C, H, W)`` float32, normalised
            (:func:`~scribmed.training.instance_inference.normalise_image`).
        maps: name -> ``(H, W)`` integer map (targets, instance ids) or ``(K, H, W)`` array
            (features, candidate masks); cropped, flipped and rotated with the image.
        fill: padding value per map when a crop runs past the image (default 0;
            targets use 255, the ignore value).
    """

    case_id: str
    image: np.ndarray
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    fill: dict[str, float] = field(default_factory=dict)


def _crop_box(h: int, w: int, patch: int, rng: np.random.Generator) -> tuple[int, int]:
    y = int(rng.integers(0, h - patch + 1)) if h > patch else 0
    x = int(rng.integers(0, w - patch + 1)) if w > patch else 0
    return y, x


def _take(arr: np.ndarray, y: int, x: int, patch: int, fill: float, reflect: bool) -> np.ndarray:
    """``arr[..., y:y+patch, x:x+patch]``, padded at the bottom/right when the image is smaller."""
    out = arr[..., y:y + patch, x:x + patch]
    ph, pw = patch - out.shape[-2], patch - out.shape[-1]
    if ph or pw:
        pad = [(0, 0)] * (out.ndim - 2) + [(0, ph), (0, pw)]
        out = np.pad(out, pad, mode="reflect") if reflect and min(out.shape[-2:]) > max(ph, pw) else \
            np.pad(out, pad, mode="constant", constant_values=fill)
    return out


def _geometry(arr: np.ndarray, flip: int, k: int) -> np.ndarray:
    if flip:
        arr = arr[..., :, ::-1]
    if k:
        arr = np.rot90(arr, k, axes=(-2, -1))
    return np.ascontiguousarray(arr)


def sample_batch(
    samples: Sequence[TrainSample], batch_size: int, patch: int, rng: np.random.Generator
) -> list[dict[str, np.ndarray]]:
    """``batch_size`` random crops (image + every map) with a random flip / rot90 each."""
    out = []
    for i in rng.integers(0, len(samples), size=batch_size):
        s = samples[int(i)]
        h, w = s.image.shape[-2:]
        y, x = _crop_box(h, w, patch, rng)
        flip, k = int(rng.integers(0, 2)), int(rng.integers(0, 4))
        item = {"image": _geometry(_take(s.image, y, x, patch, 0.0, True), flip, k)}
        for name, arr in s.maps.items():
            item[name] = _geometry(_take(arr, y, x, patch, s.fill.get(name, 0), False), flip, k)
        out.append(item)
    return out


def collate(items: Sequence[Mapping[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack the items' arrays: integer maps as long, the rest as float32 (CPU tensors)."""
    batch: dict[str, torch.Tensor] = {}
    for key in items[0]:
        arr = np.stack([np.asarray(it[key]) for it in items])
        t = torch.from_numpy(arr)
        batch[key] = t.long() if (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool) else t.float()
    return batch


class CropBatchDataset(Dataset):
    """The batch of every iteration: item ``i`` is the collated crops of 0-based iteration ``i``.

    Args:
        samples: the training images with their maps (a recipe may change the maps in place
            between epochs, e.g. WISH re-choosing SAM candidates; items read them when drawn).
        batch_size: crops per iteration.
        patch: side of the square crop.
        seed: run seed; iteration ``i`` draws from ``numpy.random.default_rng([seed, tag, i])``.
        mix: optional batch step after cropping, drawing from the same generator.
    """

    def __init__(self, samples: Sequence[TrainSample], batch_size: int, patch: int, seed: int,
                 mix: Optional[BatchMix] = None) -> None:
        if not samples:
            raise ValueError("no training images")
        self.samples = samples
        self.batch_size = int(batch_size)
        self.patch = int(patch)
        self.seed = int(seed)
        self.mix = mix

    def __len__(self) -> int:  # iterations are unbounded; the sampler says which are drawn
        return 2**62

    def __getitem__(self, iteration: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, _AUG_TAG, int(iteration)])
        items = sample_batch(self.samples, self.batch_size, self.patch, rng)
        if self.mix is not None:
            items = self.mix(items, rng)
        return collate(items)
