"""What the MONAI metric classes' ``summary()`` returns: per-class means, counts, empty-mask events.

``aggregate()`` returns MONAI's reduced tensor; :class:`MetricSummary` says what went into it. It
is read by attribute or key and never holds a NaN that silently dropped out of a mean (MONAI issue
#9095): values left out by the empty-mask policy are counted and reported.
:data:`EVENT_CODES` numbers the empty-mask events stored in the metrics' event buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from scribmed.metrics.evaluator import (
    EMPTY_EVENTS,
)

__all__ = ["EVENT_CODES", "MetricSummary"]

EVENT_CODES: dict[int, Optional[str]] = {0: None, **{i + 1: e for i, e in enumerate(EMPTY_EVENTS)}}
"""Codes of :meth:`get_event_buffer`: 0 = both masks have voxels, then one per empty-mask event."""
_CODE_OF: dict[Optional[str], int] = {e: c for c, e in EVENT_CODES.items()}

TensorLike = Union[torch.Tensor, np.ndarray]
BatchInput = Union[TensorLike, Sequence[TensorLike]]
SpacingArg = Union[None, float, Sequence[float], Sequence[Optional[Sequence[float]]], np.ndarray, torch.Tensor]
ClassNames = Union[None, Sequence[str], Mapping[int, str]]


# --------------------------------------------------------------------------------------------
# the summary
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSummary:
    """What ``summary()`` returns: per-class means with their counts, events and exclusions.

    Read fields as attributes or by key (``summary["per_class"]``); :meth:`as_dict` gives a
    plain, JSON-ready dict with the same keys. It is deliberately *not* a ``Mapping``: ignite
    copies the keys of a Mapping into ``engine.state.metrics`` and MONAI's ``StatsHandler``
    flattens nested dicts, so the ``"mean"`` of several summaries stored on one engine would
    overwrite each other. As a plain object it stays under its own name.

    Attributes:
        metric: ``"dice"``, ``"hd95"`` or ``"asd"``.
        per_class: ``{class name: mean}`` over the values the policy kept; ``None`` when a class
            has no value to average (never NaN).
        mean: mean over classes of the per-class means that exist (``None`` when none does), the
            convention of :func:`scribmed.metrics.summarize`'s ``overall``.
        n: ``{class name: number of values in its mean}``.
        n_items: items (cases) accumulated since the last ``reset()``.
        empty_events: ``{class name: {event: count}}`` for every event of
            :data:`~scribmed.metrics.EMPTY_EVENTS` (zeros included).
        excluded: ``{class name: number of values left out of its mean}`` (NaN in the buffer).
        empty_policy: the :class:`~scribmed.metrics.EmptyPolicy` value used.
        units: ``"mm"`` or ``"pixels"`` for HD95/ASD (``None`` before any call); ``None`` for Dice.
        hd95_mode: ``"medpy"`` or ``"monai"`` for HD95, else ``None``.
    """

    metric: str
    per_class: dict[str, Optional[float]]
    mean: Optional[float]
    n: dict[str, int]
    n_items: int
    empty_events: dict[str, dict[str, int]]
    excluded: dict[str, int]
    empty_policy: str
    units: Optional[str] = None
    hd95_mode: Optional[str] = None

    _KEYS: ClassVar[tuple[str, ...]] = (
        "metric", "per_class", "mean", "n", "n_items", "empty_events", "excluded",
        "total_events", "n_excluded", "empty_policy", "units", "hd95_mode",
    )

    @classmethod
    def from_buffers(
        cls,
        metric: str,
        values: Optional[torch.Tensor],
        codes: Optional[torch.Tensor],
        names: Sequence[str],
        empty_policy: str,
        units: Optional[str] = None,
        hd95_mode: Optional[str] = None,
    ) -> "MetricSummary":
        """Summarise a metric's value and event buffers ``(items, classes)`` (``None``: nothing yet)."""
        if values is None or codes is None:
            v = np.zeros((0, len(names)))
            e = np.zeros((0, len(names)), dtype=np.int64)
        else:
            v = values.detach().cpu().numpy().astype(np.float64).reshape(values.shape[0], -1)
            e = codes.detach().cpu().numpy().reshape(codes.shape[0], -1)
        per_class: dict[str, Optional[float]] = {}
        n: dict[str, int] = {}
        events: dict[str, dict[str, int]] = {}
        excluded: dict[str, int] = {}
        for k, name in enumerate(names):
            kept = v[:, k][~np.isnan(v[:, k])]
            per_class[name] = float(np.mean(kept)) if kept.size else None
            n[name] = int(kept.size)
            excluded[name] = int(v.shape[0] - kept.size)
            events[name] = {ev: int(np.count_nonzero(e[:, k] == _CODE_OF[ev])) for ev in EMPTY_EVENTS}
        means = [m for m in per_class.values() if m is not None]
        return cls(
            metric=metric,
            per_class=per_class,
            mean=float(np.mean(means)) if means else None,
            n=n,
            n_items=int(v.shape[0]),
            empty_events=events,
            excluded=excluded,
            empty_policy=empty_policy,
            units=units,
            hd95_mode=hd95_mode,
        )

    @property
    def total_events(self) -> dict[str, int]:
        """Number of values with each empty-mask event, over all classes."""
        return {e: sum(ev[e] for ev in self.empty_events.values()) for e in EMPTY_EVENTS}

    @property
    def n_excluded(self) -> int:
        """Number of values left out of the means, over all classes."""
        return int(sum(self.excluded.values()))

    def keys(self) -> tuple[str, ...]:
        """The keys of :meth:`as_dict` (also valid for ``summary[key]``)."""
        return self._KEYS

    def __getitem__(self, key: str) -> Any:
        if key not in self._KEYS:
            raise KeyError(f"{key!r} is not a MetricSummary key; have {list(self._KEYS)}")
        value = getattr(self, key)
        return dict(value) if isinstance(value, dict) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._KEYS)

    def __len__(self) -> int:
        return len(self._KEYS)

    def as_dict(self) -> dict[str, Any]:
        """A plain dict of every key (nested dicts copied)."""
        out: dict[str, Any] = {}
        for key in self._KEYS:
            value = getattr(self, key)
            if isinstance(value, dict):
                value = {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()}
            out[key] = value
        return out

    def __str__(self) -> str:
        def fmt(v: Optional[float]) -> str:
            return "n/a" if v is None else f"{v:.4f}"

        classes = ", ".join(f"{name} {fmt(v)}" for name, v in self.per_class.items())
        text = f"{self.metric} mean {fmt(self.mean)} ({classes}; n_items {self.n_items}"
        events = ", ".join(f"{e} {c}" for e, c in self.total_events.items() if c)
        if events:
            text += f"; {events}"
        if self.n_excluded:
            text += f"; excluded {self.n_excluded}"
        return text + ")"


