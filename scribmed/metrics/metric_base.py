"""The shared machinery of scribmed's MONAI metric classes (:mod:`scribmed.metrics.monai_metrics`).

:class:`_SegmentationMetric` normalises one-hot / label-map / list inputs and per-item spacing,
computes one value per item and foreground class with the functions of
:mod:`scribmed.metrics.binary`, applies the empty-mask policy, keeps the values and event codes
in MONAI cumulative buffers, and aggregates them as MONAI's own metrics do (``reduction``,
``get_not_nans``); subclasses only choose which value they report.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.metric import Cumulative
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction, look_up_option

from scribmed.metrics.binary import (
    diagonal,
    normalize_spacing,
)
from scribmed.metrics.evaluator import (
    EmptyPolicy,
    apply_empty_policy,
    empty_event,
)
from scribmed.metrics.metric_summary import (
    _CODE_OF,
    BatchInput,
    ClassNames,
    MetricSummary,
    SpacingArg,
)


class _EventBuffer(Cumulative):
    """A second cumulative buffer (synced across ranks like the values) for the event codes."""

    def aggregate(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - never aggregated
        return self.get_buffer()


# --------------------------------------------------------------------------------------------
# input normalisation
# --------------------------------------------------------------------------------------------


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return np.asarray(x.detach().cpu())
    if isinstance(x, np.ndarray):
        return x
    raise ValueError(f"{name} must be a torch.Tensor or numpy array (or a list of them), got {type(x).__name__}")


def _device_of(x: Any) -> torch.device:
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _check_default_spacing(spacing: Any) -> Optional[Union[float, tuple[float, ...]]]:
    """Validate the constructor's spacing: ``None``, a positive number or one per spatial axis."""
    if spacing is None:
        return None
    if isinstance(spacing, torch.Tensor):
        spacing = spacing.detach().cpu().numpy()
    values = np.asarray(spacing, dtype=np.float64)
    if values.ndim > 1 or values.size == 0:
        raise ValueError(f"spacing must be a number or one value per spatial axis, got {spacing!r}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing must be finite and positive, got {values.tolist()}")
    return float(values) if values.ndim == 0 else tuple(float(v) for v in values)


def _both_4d(pred: np.ndarray, ref: np.ndarray) -> bool:
    """True when both inputs of a batch are 4D (the layout that may be a channel-less 3D batch)."""
    return pred.ndim == 4 and ref.ndim == 4


class _SegmentationMetric(CumulativeIterationMetric):
    """Shared input handling, empty-mask policy, buffers and aggregation of the three metrics."""

    metric_name: ClassVar[str] = ""
    uses_spacing: ClassVar[bool] = True

    def __init__(
        self,
        num_classes: Optional[int] = None,
        include_background: bool = False,
        class_names: ClassNames = None,
        spacing: Any = None,
        empty_policy: Union[EmptyPolicy, str] = EmptyPolicy.NAN_COUNTED,
        spatial_dims: Optional[int] = None,
        reduction: Union[MetricReduction, str] = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__()
        if num_classes is not None and (
            isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2
        ):
            raise ValueError(f"num_classes must be an integer >= 2 (background included), got {num_classes!r}")
        if spatial_dims is not None and spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2, 3 or None (inferred), got {spatial_dims!r}")
        self.reduction: MetricReduction = look_up_option(reduction, MetricReduction)  # ValueError if unknown
        self.get_not_nans = bool(get_not_nans)
        self.num_classes: Optional[int] = None if num_classes is None else int(num_classes)
        self.include_background = bool(include_background)
        self.class_names = class_names
        self.spacing = _check_default_spacing(spacing)
        self.empty_policy = EmptyPolicy(empty_policy)
        self.spatial_dims = spatial_dims
        self._events = _EventBuffer()
        self._round_classes: Optional[int] = None
        self._units: Optional[str] = None
        if self.num_classes is not None:
            self._names(self.num_classes)  # validate class_names now

    # ----------------------------------------------------------------------------- buffers

    def reset(self) -> None:
        """Clear the values, the events, the units and the class count inferred from one-hot input."""
        super().reset()
        events = getattr(self, "_events", None)  # Cumulative.__init__ calls reset() first
        if events is not None:
            events.reset()
        self._round_classes = None
        self._units = None

    def get_event_buffer(self) -> Optional[torch.Tensor]:
        """Event codes ``(items, classes)`` (int64, see :data:`EVENT_CODES`), ``None`` before any call."""
        return self._events.get_buffer()

    # ----------------------------------------------------------------------------- classes

    def _names(self, num_classes: int) -> list[tuple[int, str]]:
        """``[(class index, name)]`` of the reported classes."""
        indices = list(range(0 if self.include_background else 1, num_classes))
        names = self.class_names
        if names is None:
            out = [(c, str(c)) for c in indices]
        elif isinstance(names, Mapping):
            missing = [c for c in indices if c not in names]
            if missing:
                raise ValueError(f"class_names has no name for class(es) {missing} (reported: {indices})")
            out = [(c, str(names[c])) for c in indices]
        else:
            if isinstance(names, str):
                raise ValueError("class_names must be a sequence of names or an {index: name} mapping, not a string")
            names = [str(n) for n in names]
            if len(names) == len(indices):
                out = list(zip(indices, names))
            elif not self.include_background and len(names) == num_classes:
                out = list(zip(indices, names[1:]))  # background's name given too
            else:
                raise ValueError(
                    f"class_names has {len(names)} names but {len(indices)} classes are reported "
                    f"(num_classes={num_classes}, include_background={self.include_background})"
                )
        labels = [n for _, n in out]
        if len(set(labels)) != len(labels):
            raise ValueError(f"class_names must be unique, got {labels}")
        return out

    # ----------------------------------------------------------------------------- layout

    def _spatial_dims(self, pred: np.ndarray, ref: np.ndarray) -> int:
        """Spatial dimensions of a batch (constructor value, else inferred from the two ranks)."""
        if self.spatial_dims is not None:
            return self.spatial_dims
        ranks = {pred.ndim, ref.ndim}
        bad = sorted(r for r in ranks if r not in (3, 4, 5))
        if bad:
            raise ValueError(
                f"y_pred has shape {pred.shape} and y {ref.shape}: expected batch-first (B, C, *spatial) "
                "or label maps (B, *spatial) with 2 or 3 spatial dimensions"
            )
        if 5 in ranks:
            return 3
        return 2  # (B, H, W) / (B, C, H, W); pass spatial_dims=3 for (B, D, H, W) label maps

    def _with_channel(self, x: np.ndarray, name: str, sdims: int) -> np.ndarray:
        if x.ndim == sdims + 2:
            return x
        if x.ndim == sdims + 1:
            return x[:, None]
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}: expected (B, C, *spatial) or (B, *spatial) with "
            f"{sdims} spatial dimensions"
        )

    def _resolve_classes(self, pred: np.ndarray, ref: np.ndarray) -> int:
        """Number of classes of a ``(B, C, *spatial)`` pair; C == 1 means a label map."""
        onehot = {name: x.shape[1] for name, x in (("y_pred", pred), ("y", ref)) if x.shape[1] > 1}
        if len(set(onehot.values())) > 1:
            raise ValueError(f"y_pred has {pred.shape[1]} channels but y has {ref.shape[1]}")
        if self.num_classes is not None:
            for name, c in onehot.items():
                if c != self.num_classes:
                    hint = (
                        "; for (B, D, H, W) label maps pass spatial_dims=3"
                        if self.spatial_dims is None and _both_4d(pred, ref)
                        else ""
                    )
                    raise ValueError(
                        f"{name} has {c} channels but num_classes={self.num_classes} "
                        f"(one-hot input needs one channel per class, label maps one channel){hint}"
                    )
            n = self.num_classes
        elif onehot:
            n = next(iter(onehot.values()))
        else:
            raise ValueError(
                "y_pred and y are both label maps (one channel): pass num_classes to the metric's constructor"
            )
        return n

    def _masks(self, x: np.ndarray, name: str, indices: Sequence[int], num_classes: int) -> np.ndarray:
        """Boolean masks ``(len(indices), *spatial)`` of one item ``(C, *spatial)``."""
        if x.shape[0] == 1:  # label map
            labels = x[0]
            if labels.dtype == bool:
                labels = labels.view(np.uint8)
            elif np.issubdtype(labels.dtype, np.floating):
                if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)):
                    raise ValueError(f"{name} is a label map (one channel) but holds non-integer values")
            elif not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"{name} must hold numbers, got dtype {labels.dtype}")
            if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
                raise ValueError(
                    f"{name} holds label values in [{labels.min()}, {labels.max()}] but num_classes={num_classes} "
                    f"(labels must be in [0, {num_classes - 1}])"
                )
            return np.stack([labels == c for c in indices]) if indices else np.zeros((0, *labels.shape), bool)
        if x.dtype != bool and not np.all((x == 0) | (x == 1)):
            raise ValueError(
                f"{name} has {x.shape[0]} channels (one-hot) but is not binary; discretise it first "
                "(e.g. monai.transforms.AsDiscrete(argmax=True, to_onehot=num_classes))"
            )
        return x[list(indices)].astype(bool)

    # ----------------------------------------------------------------------------- spacing

    def _split_spacing(self, spacing: SpacingArg, n_items: int) -> list[Any]:
        """One raw spacing (``None``, a number or a sequence) per item."""
        if spacing is None:
            return [self.spacing] * n_items
        if isinstance(spacing, torch.Tensor):
            spacing = spacing.detach().cpu().numpy()
        if isinstance(spacing, np.ndarray):
            if spacing.ndim == 0:
                return [float(spacing)] * n_items
            if spacing.ndim == 1:
                return [tuple(float(v) for v in spacing)] * n_items
            if spacing.ndim == 2:
                items = [tuple(float(v) for v in row) for row in spacing]
            else:
                raise ValueError(
                    f"spacing must be one tuple or one tuple per item, got an array of shape {spacing.shape}"
                )
        elif _is_number(spacing):
            return [float(spacing)] * n_items
        elif isinstance(spacing, Sequence) and not isinstance(spacing, str):
            if len(spacing) and all(_is_number(v) for v in spacing):
                return [tuple(float(v) for v in spacing)] * n_items  # one spacing for the batch
            items = list(spacing)
        else:
            raise ValueError(f"spacing must be None, a number, one tuple or one tuple per item, got {spacing!r}")
        if len(items) != n_items:
            raise ValueError(f"spacing holds {len(items)} per-item entries but the batch has {n_items} items")
        if any(s is None for s in items) and not all(s is None for s in items):
            raise ValueError("spacing mixes None (pixels) and mm values within one batch")
        return items

    def _item_spacing(self, raw: Any, sdims: int) -> Optional[tuple[float, ...]]:
        if raw is None:
            return None
        if isinstance(raw, torch.Tensor):
            raw = raw.detach().cpu().numpy()
        values = np.asarray(raw, dtype=np.float64)
        if values.ndim > 1 or (values.ndim == 1 and values.shape[0] != sdims):
            raise ValueError(
                f"spacing {values.tolist()} has {values.size} values but the images have {sdims} spatial dimensions"
            )
        return normalize_spacing(values, sdims)

    def _check_units(self, spacings: Sequence[Optional[tuple[float, ...]]]) -> Optional[str]:
        """Units of a batch (``None`` for Dice); ``ValueError`` when they differ from earlier batches'."""
        if not self.uses_spacing or not spacings:
            return None
        units = "pixels" if spacings[0] is None else "mm"
        if self._units is not None and units != self._units:
            raise ValueError(
                f"this batch is in {units} but earlier batches were in {self._units}; "
                "use one convention per round (or call reset())"
            )
        return units

    # ----------------------------------------------------------------------------- compute

    def _measure(self, pred: np.ndarray, ref: np.ndarray, spacing: Optional[tuple[float, ...]]) -> float:
        """The metric of two non-empty boolean masks."""
        raise NotImplementedError

    def _pick(self, dice: float, hd95: float, asd: float) -> float:
        """This metric's value among ``apply_empty_policy``'s."""
        raise NotImplementedError

    def _item(
        self,
        pred: np.ndarray,
        ref: np.ndarray,
        spacing: Optional[tuple[float, ...]],
        indices: Sequence[int],
        num_classes: int,
    ) -> tuple[list[float], list[int]]:
        p_masks = self._masks(pred, "y_pred", indices, num_classes)
        r_masks = self._masks(ref, "y", indices, num_classes)
        values: list[float] = []
        codes: list[int] = []
        for p, r in zip(p_masks, r_masks):
            event = empty_event(not p.any(), not r.any())
            if event is None:
                value = self._measure(p, r, spacing)
            else:
                d, h, a, excluded = apply_empty_policy(event, self.empty_policy, diagonal(p.shape, spacing))
                value = math.nan if excluded else self._pick(d, h, a)
            values.append(float(value))
            codes.append(_CODE_OF[event])
        return values, codes

    def _compute(
        self, y_pred: BatchInput, y: Optional[BatchInput], spacing: SpacingArg
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Values and event codes ``(B, K)`` of a batch (a batch-first array or a list of items)."""
        if y is None:
            raise ValueError(f"{type(self).__name__} needs the reference: call metric(y_pred, y)")
        if isinstance(y_pred, (list, tuple)) or isinstance(y, (list, tuple)):
            if not (isinstance(y_pred, (list, tuple)) and isinstance(y, (list, tuple))):
                raise ValueError("y_pred and y must both be batch-first arrays or both lists of per-item arrays")
            if len(y_pred) != len(y):
                raise ValueError(f"y_pred has {len(y_pred)} items but y has {len(y)}")
            if not y_pred:
                raise ValueError("y_pred and y are empty lists")
            pairs = [(_to_numpy(p, "y_pred")[None], _to_numpy(r, "y")[None]) for p, r in zip(y_pred, y)]
            device = _device_of(y_pred[0])
        else:
            pairs = [(_to_numpy(y_pred, "y_pred"), _to_numpy(y, "y"))]
            device = _device_of(y_pred)
        n_items = sum(p.shape[0] for p, _ in pairs)
        raw_spacings = self._split_spacing(spacing, n_items) if self.uses_spacing else [None] * n_items

        # validate everything first, so a bad batch leaves the buffers and the state untouched
        prepared = []
        spacings: list[Optional[tuple[float, ...]]] = []
        num_classes = self._round_classes
        for pred, ref in pairs:
            sdims = self._spatial_dims(pred, ref)
            pred = self._with_channel(pred, "y_pred", sdims)
            ref = self._with_channel(ref, "y", sdims)
            if pred.shape[0] != ref.shape[0]:
                raise ValueError(f"y_pred has batch size {pred.shape[0]} but y has {ref.shape[0]}")
            if pred.shape[2:] != ref.shape[2:]:
                raise ValueError(f"y_pred has spatial shape {pred.shape[2:]} but y has {ref.shape[2:]}")
            n = self._resolve_classes(pred, ref)
            if num_classes is not None and n != num_classes:
                raise ValueError(f"this batch has {n} classes but earlier items had {num_classes}; call reset()")
            num_classes = n
            for _ in range(pred.shape[0]):
                raw = raw_spacings[len(spacings)]
                spacings.append(self._item_spacing(raw, sdims) if self.uses_spacing else None)
            prepared.append((pred, ref))
        assert num_classes is not None
        indices = [c for c, _ in self._names(num_classes)]
        units = self._check_units(spacings)

        values: list[list[float]] = []
        codes: list[list[int]] = []
        for pred, ref in prepared:
            for b in range(pred.shape[0]):
                v, c = self._item(pred[b], ref[b], spacings[len(values)], indices, num_classes)
                values.append(v)
                codes.append(c)
        self._round_classes = num_classes
        self._units = units
        dtype = torch.float32 if device.type == "mps" else torch.float64
        return (
            torch.tensor(values, dtype=dtype, device=device).reshape(n_items, -1),
            torch.tensor(codes, dtype=torch.int64, device=device).reshape(n_items, -1),
        )

    def _compute_tensor(self, y_pred: torch.Tensor, y: Optional[torch.Tensor] = None, **kwargs: Any) -> torch.Tensor:
        """Values ``(B, K)`` of a batch-first pair (MONAI's hook; does not touch the buffers)."""
        return self._compute(y_pred, y, kwargs.get("spacing"))[0]

    def __call__(  # type: ignore[override]
        self, y_pred: BatchInput, y: Optional[BatchInput] = None, spacing: SpacingArg = None, **kwargs: Any
    ) -> torch.Tensor:
        """Compute one batch, add its values and events to the buffers and return the values.

        Args:
            y_pred: prediction, batch-first: one-hot ``(B, C, *spatial)`` (binary, one channel per
                class) or a label map ``(B, 1, *spatial)`` / ``(B, *spatial)``; or a list of
                per-item ``(C, *spatial)`` / ``(1, *spatial)`` / ``(*spatial)`` arrays (MONAI's
                decollated form; items may differ in shape). Torch tensors or numpy arrays.
            y: reference, in either form (independently of ``y_pred``).
            spacing: mm per spatial axis, in the arrays' axis order: one tuple (or number) for
                the whole batch, or a sequence / ``(B, ndim)`` array with one per item (``None``
                entries for pixels, all or none). ``None`` uses the constructor's spacing; when
                that is ``None`` too, distances are in pixels. Ignored by :class:`DiceMetric`.
            kwargs: not accepted (``TypeError``); named for MONAI's signature only.

        Returns:
            float64 tensor ``(B, K)`` of the ``K`` reported classes, on ``y_pred``'s device; NaN
            only where the empty-mask policy excludes the value from the means.

        Raises:
            ValueError: shapes that do not fit the layouts above or each other, a channel count
                different from ``num_classes``, label values outside ``[0, num_classes)``,
                a non-binary one-hot input, a spacing whose length is not the number of spatial
                dimensions or whose item count is not the batch size, mixed units.
            TypeError: unknown keyword arguments.
        """
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments {sorted(kwargs)}")
        values, codes = self._compute(y_pred, y, spacing)
        self.extend(values)
        self._events.extend(codes)
        return values

    # ----------------------------------------------------------------------------- aggregate

    def summary(self) -> MetricSummary:
        """Per-class means, counts, empty-mask events and exclusions of everything accumulated.

        Returns:
            A :class:`MetricSummary`. Before any call (or after ``reset()``) ``n_items`` is 0
            and every mean ``None``.
        """
        n_classes = self._round_classes if self._round_classes is not None else self.num_classes
        names = [n for _, n in self._names(n_classes)] if n_classes is not None else []
        return MetricSummary.from_buffers(
            self.metric_name,
            self.get_buffer(),
            self.get_event_buffer(),
            names,
            empty_policy=self.empty_policy.value,
            units=self._units if self.uses_spacing else None,
            hd95_mode=self._hd95_mode(),
        )

    def _hd95_mode(self) -> Optional[str]:
        return None

    def aggregate(  # type: ignore[override]
        self, reduction: Union[MetricReduction, str, None] = None
    ) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The buffer reduced as MONAI's metrics reduce theirs (``monai.metrics.DiceMetric.aggregate``).

        NaNs (the values the empty-mask policy excludes) are left out of every mean and sum, as
        MONAI's ``do_metric_reduction`` does; a mean over no value is 0 with a ``not_nans`` count
        of 0, MONAI's convention (:meth:`summary` says which values were left out and why).

        Args:
            reduction: a ``monai.utils.MetricReduction`` or its string; ``None`` uses the
                constructor's (``"mean"`` by default: per-item class means, then their mean).

        Returns:
            The reduced tensor (``"mean_batch"``: one mean per reported class), or
            ``(value, not_nans)`` when the metric was built with ``get_not_nans=True``.

        Raises:
            ValueError: nothing accumulated since the last ``reset()``, or an unknown reduction.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"{type(self).__name__} has nothing to aggregate: call it on a batch first")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f
