"""S4M's ARP copy-paste: swap random instances between two samples, labels follow.

Two samples A and B of the same spatial size ``(H, W)``. One draw per call picks a random subset
of B's instances (each with probability ``prob_instance``, at most ``max_instances``) and a random
subset of A's. Both pastes read the *original* samples:

- **A ← B**: inside the union of B's chosen instance masks, every image channel of A takes B's
  values; each pasted instance gets a new id above A's maximum id (in ascending order of its id
  in B); A's own instances lose the covered pixels (an instance fully covered disappears; one cut
  in two keeps its id for both pieces). Every further label-like array (``label_keys``: semantic
  label, sparse weak-label rasters such as point maps, SAM pseudo labels, confidence maps) takes
  B's values inside the same pixels.
- **B ← A**: the same with the roles swapped.

Instances sit at the same location in both samples (no shift, no scaling). Arrays are ``(H, W)``
or ``(C, H, W)`` (the mask applies to the last two axes); numpy in → numpy out, torch in → torch
out (device and dtype of the target kept).

:func:`arp_draw` draws the subsets, :func:`paste_instances` pastes one way,
:func:`arp_copy_paste` does both; :class:`ARPCopyPaste` / :class:`ARPCopyPasted` are the
randomizable array and dictionary transforms.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform
from monai.utils import convert_to_numpy

Rng = np.random.RandomState | np.random.Generator

__all__ = [
    "ARPCopyPaste",
    "ARPCopyPasted",
    "arp_copy_paste",
    "arp_draw",
    "paste_instances",
]


def _rng(rng: Rng | int | None) -> Rng:
    if isinstance(rng, (np.random.RandomState, np.random.Generator)):
        return rng
    return np.random.default_rng(rng)


def _hw(x: Any) -> tuple[int, int]:
    shape = tuple(x.shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"expected an (H, W) or (C, H, W) array, got shape {shape}")
    return int(shape[-2]), int(shape[-1])


def _instance_np(instance: Any) -> np.ndarray:
    a = np.asarray(convert_to_numpy(instance))
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"an instance map must be (H, W) or (1, H, W), got shape {a.shape}")
    return a


def _ids(instance: np.ndarray) -> np.ndarray:
    u = np.unique(instance)
    return u[u > 0].astype(np.int64)


def _check_params(prob_instance: float, max_instances: int | None) -> None:
    if not 0.0 <= float(prob_instance) <= 1.0:
        raise ValueError(f"prob_instance must be in [0, 1], got {prob_instance}")
    if max_instances is not None and int(max_instances) < 0:
        raise ValueError(f"max_instances must be >= 0 or None, got {max_instances}")


def _subset(ids: np.ndarray, gen: Rng, prob_instance: float, max_instances: int | None) -> np.ndarray:
    chosen = ids[gen.random(ids.size) < prob_instance]
    if max_instances is not None and chosen.size > int(max_instances):
        chosen = np.sort(chosen[gen.permutation(chosen.size)[: int(max_instances)]])
    return chosen


def arp_draw(
    instance_a: Any,
    instance_b: Any,
    rng: Rng | int | None = None,
    prob_instance: float = 0.5,
    max_instances: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The random part of ARP: which instances move.

    Args:
        instance_a, instance_b: ``(H, W)`` or ``(1, H, W)`` instance maps (0 background).
        rng: ``RandomState`` (a transform's ``self.R``), ``Generator`` or seed.
        prob_instance: each instance is chosen independently with this probability.
        max_instances: at most this many per direction (a random subset of the chosen ones).

    Returns:
        ``(from_b, from_a)``: int64 sorted ids of B's instances to paste onto A, and of A's
        instances to paste onto B.
    """
    _check_params(prob_instance, max_instances)
    gen = _rng(rng)
    from_b = _subset(_ids(_instance_np(instance_b)), gen, float(prob_instance), max_instances)
    from_a = _subset(_ids(_instance_np(instance_a)), gen, float(prob_instance), max_instances)
    return from_b, from_a


def _where(mask: np.ndarray, src: Any, dst: Any) -> Any:
    """``dst`` with ``src``'s values inside ``mask`` (last two axes); ``dst``'s type, device and dtype."""
    if isinstance(dst, torch.Tensor):
        m = torch.as_tensor(mask, device=dst.device)
        s = torch.as_tensor(src, device=dst.device).to(dst.dtype)
        return torch.where(m, s, dst)
    d = np.asarray(dst)
    s = np.asarray(convert_to_numpy(src)).astype(d.dtype, copy=False)
    return np.where(mask, s, d).astype(d.dtype, copy=False)


def _check_pair(name: str, a: Any, b: Any, hw: tuple[int, int]) -> None:
    ha, hb = _hw(a), _hw(b)
    if ha != hb or tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name}: sample A has shape {tuple(a.shape)} and sample B {tuple(b.shape)}; "
                         "ARP copy-paste needs the same shape")
    if ha != hw:
        raise ValueError(f"{name}: spatial shape {ha} differs from the instance maps' {hw}")


def paste_instances(
    target_instance: Any,
    source_instance: Any,
    ids: Sequence[int] | np.ndarray,
    target_arrays: Sequence[Any] = (),
    source_arrays: Sequence[Any] = (),
) -> tuple[Any, list[Any]]:
    """Paste the source's instances ``ids`` onto the target at the same location.

    Args:
        target_instance, source_instance: ``(H, W)`` or ``(1, H, W)`` instance maps.
        ids: source instance ids to paste.
        target_arrays, source_arrays: matching images / label-like arrays (``(H, W)`` or
            ``(C, H, W)``), overwritten with the source's values inside the pasted masks.

    Returns:
        ``(instance, arrays)``: the target's new instance map (pasted instances numbered
        ``max(target) + 1, ...`` in ascending source id; its type, shape and dtype) and the
        pasted ``target_arrays``.

    Raises:
        ValueError: shapes differ, or the new ids do not fit the instance map's integer dtype.
    """
    t = _instance_np(target_instance)
    s = _instance_np(source_instance)
    if t.shape != s.shape:
        raise ValueError(f"target instance map {t.shape} and source {s.shape} must have the same (H, W)")
    if len(target_arrays) != len(source_arrays):
        raise ValueError(f"need one source array per target array, got {len(target_arrays)} and {len(source_arrays)}")
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size == 0:
        return target_instance, list(target_arrays)
    mask = np.isin(s, ids)
    base = max(int(t.max()), 0)
    new = t.astype(np.int64)
    new[mask] = 0
    for j, i in enumerate(np.sort(ids), start=1):
        new[s == i] = base + j
    dtype = t.dtype
    if np.issubdtype(dtype, np.integer) and base + ids.size > np.iinfo(dtype).max:
        raise ValueError(f"pasted ids up to {base + ids.size} do not fit the instance map's dtype {dtype}")
    if isinstance(target_instance, torch.Tensor):
        out_inst: Any = target_instance.clone()  # a MONAI MetaTensor keeps its metadata
        out_inst.copy_(torch.as_tensor(new.reshape(tuple(target_instance.shape))).to(target_instance.dtype))
    else:
        out_inst = new.astype(dtype).reshape(np.shape(target_instance))
    arrays = [_where(mask, src, dst) for dst, src in zip(target_arrays, source_arrays)]
    return out_inst, arrays


def arp_copy_paste(
    a: Mapping[Hashable, Any],
    b: Mapping[Hashable, Any],
    rng: Rng | int | None = None,
    prob_instance: float = 0.5,
    max_instances: int | None = None,
    image_keys: Sequence[Hashable] = ("image",),
    instance_key: Hashable = "instance",
    label_keys: Sequence[Hashable] = (),
) -> tuple[dict[Hashable, Any], dict[Hashable, Any]]:
    """ARP copy-paste between two samples (module docstring), one draw from ``rng``.

    Args:
        a, b: the samples, each holding ``image_keys``, ``instance_key`` and ``label_keys``.
        rng: ``RandomState``, ``Generator`` or seed.
        prob_instance: probability that an instance is pasted.
        max_instances: at most this many instances pasted per direction.
        image_keys: image arrays (``(H, W)`` or ``(C, H, W)``).
        instance_key: the instance maps.
        label_keys: further label-like arrays that follow the pasted pixels.

    Returns:
        ``(a_out, b_out)``: new dicts (other keys copied unchanged).

    Raises:
        ValueError: the samples' spatial shapes (or an array pair's shapes) differ.
    """
    keys = [*image_keys, *label_keys]
    hw_a, hw_b = _instance_np(a[instance_key]).shape, _instance_np(b[instance_key]).shape
    if hw_a != hw_b:
        raise ValueError(f"sample A's instance map is {hw_a} and sample B's {hw_b}; ARP copy-paste needs the "
                         "same spatial size")
    for key in keys:
        _check_pair(str(key), a[key], b[key], hw_a)
    from_b, from_a = arp_draw(a[instance_key], b[instance_key], rng, prob_instance, max_instances)
    return _apply(a, b, from_b, from_a, instance_key, keys)


def _apply(
    a: Mapping[Hashable, Any],
    b: Mapping[Hashable, Any],
    from_b: np.ndarray,
    from_a: np.ndarray,
    instance_key: Hashable,
    keys: Sequence[Hashable],
) -> tuple[dict[Hashable, Any], dict[Hashable, Any]]:
    a_out, b_out = dict(a), dict(b)
    inst_a, arr_a = paste_instances(a[instance_key], b[instance_key], from_b, [a[k] for k in keys],
                                    [b[k] for k in keys])
    inst_b, arr_b = paste_instances(b[instance_key], a[instance_key], from_a, [b[k] for k in keys],
                                    [a[k] for k in keys])
    a_out[instance_key], b_out[instance_key] = inst_a, inst_b
    for key, va, vb in zip(keys, arr_a, arr_b):
        a_out[key], b_out[key] = va, vb
    return a_out, b_out


class ARPCopyPaste(Randomizable, Transform):
    """Array transform: ARP copy-paste of two samples (module docstring).

    ``__call__(image_a, instance_a, image_b, instance_b, *extra_pairs)`` where each extra pair is
    ``(label_a, label_b)`` (semantic labels, weak-label rasters, confidence maps); returns
    ``(image_a, instance_a, image_b, instance_b, *extra_pairs)`` after pasting. One draw from
    ``self.R`` per call.

    Args:
        prob_instance: probability that an instance is pasted (0.5).
        max_instances: at most this many instances pasted per direction (``None``: no limit).
    """

    def __init__(self, prob_instance: float = 0.5, max_instances: int | None = None) -> None:
        _check_params(prob_instance, max_instances)
        self.prob_instance = float(prob_instance)
        self.max_instances = None if max_instances is None else int(max_instances)
        self._drawn: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0, np.int64))

    def randomize(self, instance_a: Any, instance_b: Any) -> None:
        """Draw which instances move (``(from_b, from_a)``) from ``self.R``."""
        self._drawn = arp_draw(instance_a, instance_b, self.R, self.prob_instance, self.max_instances)

    def __call__(self, image_a: Any, instance_a: Any, image_b: Any, instance_b: Any,
                 *extra_pairs: tuple[Any, Any]) -> tuple[Any, ...]:
        for pair in extra_pairs:
            if len(pair) != 2:
                raise ValueError("each extra pair must be (label_a, label_b)")
        keys = ["image", *(f"extra{i}" for i in range(len(extra_pairs)))]
        a = {"instance": instance_a, "image": image_a, **{k: p[0] for k, p in zip(keys[1:], extra_pairs)}}
        b = {"instance": instance_b, "image": image_b, **{k: p[1] for k, p in zip(keys[1:], extra_pairs)}}
        hw_a, hw_b = _instance_np(instance_a).shape, _instance_np(instance_b).shape
        if hw_a != hw_b:
            raise ValueError(f"sample A's instance map is {hw_a} and sample B's {hw_b}; ARP copy-paste needs the "
                             "same spatial size")
        for key in keys:
            _check_pair(key, a[key], b[key], hw_a)
        self.randomize(instance_a, instance_b)
        a_out, b_out = _apply(a, b, *self._drawn, "instance", keys)
        return (a_out["image"], a_out["instance"], b_out["image"], b_out["instance"],
                *((a_out[k], b_out[k]) for k in keys[1:]))


class ARPCopyPasted(Randomizable, MapTransform):
    """Dictionary version of :class:`ARPCopyPaste`.

    The data dict holds sample A's keys and sample B's keys with ``pair_suffix``, e.g.
    ``"image"``, ``"instance"``, ``"image_b"``, ``"instance_b"``; both samples are pasted in place
    of their keys (other keys untouched). One draw from ``self.R`` per call.

    Args:
        keys: image key(s) of sample A (B's: the same with ``pair_suffix``).
        instance_key: sample A's instance map (B's: with ``pair_suffix``).
        label_keys: further label-like keys that follow the pasted pixels.
        pair_suffix: suffix of sample B's keys (``"_b"``).
        prob_instance: probability that an instance is pasted (0.5).
        max_instances: at most this many instances pasted per direction.
        allow_missing_keys: skip image / label keys absent from the dict (the instance maps are
            always required).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image",),
        instance_key: str = "instance",
        label_keys: Sequence[str] = (),
        pair_suffix: str = "_b",
        prob_instance: float = 0.5,
        max_instances: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if not pair_suffix:
            raise ValueError("pair_suffix must be a non-empty string")
        self.instance_key = instance_key
        self.label_keys = tuple(label_keys)
        self.pair_suffix = pair_suffix
        self.copy_paste = ARPCopyPaste(prob_instance, max_instances)

    def randomize(self, data: Any = None) -> None:
        """Draw which instances move from ``self.R`` (``data``: ``(instance_a, instance_b)``)."""
        self.copy_paste.R = self.R  # the inner array transform draws from this transform's state
        self.copy_paste.randomize(*data)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ka, kb = self.instance_key, f"{self.instance_key}{self.pair_suffix}"
        for key in (ka, kb):
            if key not in d:
                raise KeyError(f"ARPCopyPasted needs the instance maps {ka!r} and {kb!r}; {key!r} is missing")
        keys = []
        for key in [*self.keys, *self.label_keys]:
            pair = f"{key}{self.pair_suffix}"
            if key in d and pair in d:
                keys.append(key)
            elif not self.allow_missing_keys:
                raise KeyError(f"ARPCopyPasted: key {key!r} or its pair {pair!r} is missing")
        a = {k: d[k] for k in [ka, *keys]}
        b = {k: d[f"{k}{self.pair_suffix}"] for k in [ka, *keys]}
        hw_a, hw_b = _instance_np(a[ka]).shape, _instance_np(b[ka]).shape
        if hw_a != hw_b:
            raise ValueError(f"sample A's instance map {ka!r} is {hw_a} and sample B's {kb!r} {hw_b}; "
                             "ARP copy-paste needs the same spatial size")
        for key in keys:
            _check_pair(str(key), a[key], b[key], hw_a)
        self.randomize((a[ka], b[ka]))
        a_out, b_out = _apply(a, b, *self.copy_paste._drawn, ka, keys)
        for key in [ka, *keys]:
            d[key] = a_out[key]
            d[f"{key}{self.pair_suffix}"] = b_out[key]
        return d
