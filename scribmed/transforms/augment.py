"""DMPLS training augmentation: random rot90 + flip, or a small random rotation.

All transforms act on the last two axes ``(H, W)`` of numpy arrays or tensors (any leading
channel/slice axes, any device) and return the input's type and dtype. Dictionary versions draw
their random parameters once per call from ``self.R`` so every key (image, label, scribble,
pseudo label) receives the same geometric transform.

Padding after a rotation depends on what a key holds: images are padded with zeros (or the edge
value), label maps with 0 (background), and **scribbles with their ignore value**: 0 is the
background scribble, so zero padding would invent background annotations in the corners.

Differences from the WSL4MIS reference, on purpose: the rotation angle is continuous in
``[-max_angle, max_angle]`` (reference: integer degrees in ``[-20, 19]``); images are rotated
bilinearly (reference: ``order=0``, kept available as ``image_mode="nearest"``); scribbles are
padded with the ignore value (reference: 0).
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform

__all__ = [
    "DMPLSAugmentd",
    "RandRot90Flip",
    "RandRot90Flipd",
    "RandRotateSmall",
    "RandRotateSmalld",
    "rot90_flip",
    "rotate_slices",
]

InterpMode = Literal["bilinear", "nearest"]
PaddingMode = Literal["zeros", "border", "constant"]


def rot90_flip(x: NdarrayOrTensor, k: int, flip_axis: int | None) -> NdarrayOrTensor:
    """Rotate the ``(H, W)`` plane by ``k`` quarter turns, then flip spatial axis ``flip_axis``.

    Args:
        x: ``(..., H, W)`` array or tensor.
        k: number of 90-degree turns (any int, taken mod 4).
        flip_axis: 0 flips H (rows), 1 flips W (columns), ``None`` no flip.

    Returns:
        Same type/dtype; contiguous numpy (safe for ``torch.from_numpy``).
    """
    if x.ndim < 2:
        raise ValueError(f"expected an array (..., H, W), got shape {tuple(x.shape)}")
    if flip_axis not in (None, 0, 1):
        raise ValueError(f"flip_axis must be 0, 1 or None, got {flip_axis!r}")
    k = int(k) % 4
    axis = None if flip_axis is None else x.ndim - 2 + flip_axis
    if isinstance(x, np.ndarray):
        out = np.rot90(x, k, axes=(-2, -1))
        if axis is not None:
            out = np.flip(out, axis=axis)
        return np.ascontiguousarray(out)
    out_t = torch.rot90(x, k, dims=(-2, -1)) if k else x
    return torch.flip(out_t, dims=(axis,)) if axis is not None else out_t.clone()


def rotate_slices(
    x: NdarrayOrTensor,
    angle: float,
    mode: InterpMode = "bilinear",
    padding_mode: PaddingMode = "zeros",
    cval: float = 0.0,
) -> NdarrayOrTensor:
    """Rotate the ``(H, W)`` plane about its centre by ``angle`` degrees, keeping the shape.

    Positive angles turn the content counter-clockwise as displayed (row 0 at the top), the
    convention (and, in nearest mode, the exact output) of ``scipy.ndimage.rotate(reshape=False)``.

    Args:
        x: ``(..., H, W)`` array or tensor.
        angle: degrees.
        mode: ``"bilinear"`` (intensities) or ``"nearest"`` (label maps: values are copied,
            never interpolated).
        padding_mode: ``"zeros"``, ``"border"`` (edge value) or ``"constant"`` (``cval``) for
            pixels that come from outside the input.
        cval: fill value for ``padding_mode="constant"`` (e.g. a scribble's ignore value).

    Returns:
        Same type, device, dtype and shape (integer inputs rotated bilinearly are rounded).
    """
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    if padding_mode not in ("zeros", "border", "constant"):
        raise ValueError(f"padding_mode must be 'zeros', 'border' or 'constant', got {padding_mode!r}")
    is_numpy = isinstance(x, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(x)) if is_numpy else x
    if t.ndim < 2:
        raise ValueError(f"expected an array (..., H, W), got shape {tuple(t.shape)}")
    dtype = t.dtype
    h, w = int(t.shape[-2]), int(t.shape[-1])
    work = t.reshape(1, -1, h, w)
    if not work.is_floating_point() or (work.dtype in (torch.float16, torch.bfloat16) and work.device.type == "cpu"):
        work = work.to(torch.float32)
    shift = float(cval) if padding_mode == "constant" else 0.0
    if shift:
        work = work - shift
    # Output-to-input map in grid_sample's normalised coordinates (x = column, y = row, each in
    # [-1, 1]): S^-1 R(a) S with S = diag(W/2, H/2), so the rotation is rigid in pixel units for
    # non-square slices too. In display coordinates (y down) R(a) turns content counter-clockwise.
    a = math.radians(float(angle))
    c, s = math.cos(a), math.sin(a)
    theta = torch.tensor(
        [[[c, -s * h / w, 0.0], [s * w / h, c, 0.0]]], dtype=work.dtype, device=work.device
    )
    grid = F.affine_grid(theta, [1, work.shape[1], h, w], align_corners=False)
    out = F.grid_sample(
        work,
        grid,
        mode=mode,
        padding_mode="border" if padding_mode == "border" else "zeros",
        align_corners=False,
    )
    if shift:
        out = out + shift
    if not (dtype.is_floating_point or dtype.is_complex) and mode == "bilinear":
        out = out.round()
    out = out.reshape(t.shape).to(dtype)
    return out.numpy() if is_numpy else out


class RandRot90Flip(RandomizableTransform):
    """Array transform: rot90 by k ~ U{0..3}, then a flip along a random spatial axis.

    Every call that transforms flips (as the reference does); with k this covers the eight
    symmetries of the square uniformly.

    Args:
        prob: probability of transforming at all.
    """

    def __init__(self, prob: float = 1.0) -> None:
        RandomizableTransform.__init__(self, prob)
        self.k = 0
        self.flip_axis = 0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        self.k = int(self.R.randint(0, 4))
        self.flip_axis = int(self.R.randint(0, 2))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        return rot90_flip(img, self.k, self.flip_axis)


class RandRot90Flipd(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandRot90Flip`: one draw per call, applied to all keys.

    Args:
        keys: keys to transform (images and label maps alike; no interpolation happens).
        prob: probability of transforming at all.
        allow_missing_keys: skip absent keys instead of raising.
    """

    def __init__(self, keys: KeysCollection, prob: float = 1.0, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.rand = RandRot90Flip(prob=1.0)
        self.rand.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> "RandRot90Flipd":
        super().set_random_state(seed, state)
        self.rand.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.rand.randomize()

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        d = dict(data)
        if randomize:
            self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = self.rand(d[key], randomize=False)
        return d


class RandRotateSmall(RandomizableTransform):
    """Array transform: rotation by an angle ~ U(-max_angle, max_angle) degrees.

    Args:
        max_angle: largest rotation in degrees (DMPLS: 20).
        mode: ``"bilinear"`` (images) or ``"nearest"`` (label maps).
        padding_mode: ``"zeros"``, ``"border"`` or ``"constant"`` (fill with ``cval``).
        cval: fill value for ``"constant"``; a scribble's ignore value.
        prob: probability of transforming at all.
    """

    def __init__(
        self,
        max_angle: float = 20.0,
        mode: InterpMode = "bilinear",
        padding_mode: PaddingMode = "zeros",
        cval: float = 0.0,
        prob: float = 1.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if max_angle < 0:
            raise ValueError(f"max_angle must be >= 0, got {max_angle}")
        self.max_angle = float(max_angle)
        self.mode: InterpMode = mode
        self.padding_mode: PaddingMode = padding_mode
        self.cval = float(cval)
        self.angle = 0.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.angle = float(self.R.uniform(-self.max_angle, self.max_angle))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        return rotate_slices(img, self.angle, self.mode, self.padding_mode, self.cval)


def _key_tuple(keys: KeysCollection) -> tuple[Hashable, ...]:
    return (keys,) if isinstance(keys, (str, int)) else tuple(keys)


class RandRotateSmalld(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandRotateSmall`, with per-kind interpolation and padding.

    Keys in ``keys`` but in neither ``label_keys`` nor ``scribble_keys`` are images: rotated with
    ``image_mode`` and padded with ``image_padding``. ``label_keys`` (full labels, pseudo
    labels) are rotated nearest and padded with 0; ``scribble_keys`` nearest and padded with
    ``ignore_index``.

    Args:
        keys: every key to rotate.
        label_keys: subset of ``keys`` holding dense label maps.
        scribble_keys: subset of ``keys`` holding scribbles (sparse, with an ignore value).
        ignore_index: the scribbles' unlabelled value; required when ``scribble_keys`` is given.
        max_angle: largest rotation in degrees.
        image_mode: ``"bilinear"`` or ``"nearest"`` (WSL4MIS) for images.
        image_padding: ``"zeros"`` or ``"border"`` for images.
        prob: probability of rotating at all.
        allow_missing_keys: skip absent keys instead of raising.

    Raises:
        ValueError: label/scribble keys not a subset of ``keys``, overlapping, or scribble keys
            without ``ignore_index``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: KeysCollection = (),
        scribble_keys: KeysCollection = (),
        ignore_index: int | None = None,
        max_angle: float = 20.0,
        image_mode: InterpMode = "bilinear",
        image_padding: Literal["zeros", "border"] = "zeros",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.label_keys, self.scribble_keys = _check_kinds(self.keys, label_keys, scribble_keys, ignore_index)
        if image_padding not in ("zeros", "border"):
            raise ValueError(f"image_padding must be 'zeros' or 'border', got {image_padding!r}")
        self.ignore_index = ignore_index
        self.image_mode: InterpMode = image_mode
        self.image_padding: Literal["zeros", "border"] = image_padding
        self.rand = RandRotateSmall(max_angle=max_angle, prob=1.0)
        self.rand.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> "RandRotateSmalld":
        super().set_random_state(seed, state)
        self.rand.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.rand.randomize()

    @property
    def angle(self) -> float:
        """The last drawn angle in degrees."""
        return self.rand.angle

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        d = dict(data)
        if randomize:
            self.randomize()
        if not self._do_transform:
            return d
        angle = self.rand.angle
        for key in self.key_iterator(d):
            if key in self.scribble_keys:
                d[key] = rotate_slices(d[key], angle, "nearest", "constant", float(self.ignore_index))  # type: ignore[arg-type]
            elif key in self.label_keys:
                d[key] = rotate_slices(d[key], angle, "nearest", "zeros")
            else:
                d[key] = rotate_slices(d[key], angle, self.image_mode, self.image_padding)
        return d


def _check_kinds(
    keys: Sequence[Hashable], label_keys: KeysCollection, scribble_keys: KeysCollection, ignore_index: int | None
) -> tuple[frozenset, frozenset]:
    labels, scribbles = set(_key_tuple(label_keys)), set(_key_tuple(scribble_keys))
    unknown = (labels | scribbles) - set(keys)
    if unknown:
        raise ValueError(f"label/scribble keys {sorted(map(str, unknown))} are not among keys {list(keys)}")
    if labels & scribbles:
        raise ValueError(f"keys {sorted(map(str, labels & scribbles))} are both label and scribble keys")
    if scribbles and ignore_index is None:
        raise ValueError("scribble_keys need ignore_index (the unlabelled value used as padding)")
    return frozenset(labels), frozenset(scribbles)


class DMPLSAugmentd(Randomizable, MapTransform):
    """The DMPLS/WSL4MIS augmentation policy: rot90 + flip, or a small rotation, or nothing.

    Per call, one uniform draw ``u`` picks: ``u < rot_flip_prob`` → :class:`RandRot90Flipd`;
    otherwise, with probability ``rotate_prob`` → :class:`RandRotateSmalld`; otherwise the
    sample is returned unchanged. The defaults (0.5, 0.5) reproduce WSL4MIS's
    ``RandomGenerator``: rot90+flip 50 %, rotation 25 %, identity 25 %; ``rotate_prob=1.0``
    gives an even choice between the two. All draws come from ``self.R`` (shared with the two
    sub-transforms), so ``set_random_state`` makes the whole policy reproducible.

    Args:
        keys: every key to transform.
        label_keys, scribble_keys, ignore_index, max_angle, image_mode, image_padding: see
            :class:`RandRotateSmalld`.
        rot_flip_prob: probability of the rot90 + flip branch.
        rotate_prob: probability of the rotation branch when rot90 + flip was not chosen.
        allow_missing_keys: skip absent keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: KeysCollection = (),
        scribble_keys: KeysCollection = (),
        ignore_index: int | None = None,
        rot_flip_prob: float = 0.5,
        rotate_prob: float = 0.5,
        max_angle: float = 20.0,
        image_mode: InterpMode = "bilinear",
        image_padding: Literal["zeros", "border"] = "zeros",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        for name, p in (("rot_flip_prob", rot_flip_prob), ("rotate_prob", rotate_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.rot_flip_prob = float(rot_flip_prob)
        self.rotate_prob = float(rotate_prob)
        self.rot_flip = RandRot90Flipd(keys, prob=1.0, allow_missing_keys=allow_missing_keys)
        self.rotate = RandRotateSmalld(
            keys,
            label_keys=label_keys,
            scribble_keys=scribble_keys,
            ignore_index=ignore_index,
            max_angle=max_angle,
            image_mode=image_mode,
            image_padding=image_padding,
            prob=1.0,
            allow_missing_keys=allow_missing_keys,
        )
        self.choice: Literal["rot_flip", "rotate", "none"] = "none"
        self.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> "DMPLSAugmentd":
        super().set_random_state(seed, state)
        self.rot_flip.set_random_state(state=self.R)
        self.rotate.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        if self.R.rand() < self.rot_flip_prob:
            self.choice = "rot_flip"
            self.rot_flip.randomize()
        elif self.R.rand() < self.rotate_prob:
            self.choice = "rotate"
            self.rotate.randomize()
        else:
            self.choice = "none"

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.randomize()
        if self.choice == "rot_flip":
            return self.rot_flip(data, randomize=False)
        if self.choice == "rotate":
            return self.rotate(data, randomize=False)
        return dict(data)
