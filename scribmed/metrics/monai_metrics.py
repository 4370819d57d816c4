"""MONAI metric classes over scribmed's medpy-exact Dice, HD95 and ASD.

:class:`DiceMetric`, :class:`HD95Metric` and :class:`ASDMetric` are
``monai.metrics.CumulativeIterationMetric`` subclasses with MONAI's contract: call them on every
batch, read the per-item values with ``get_buffer()``, reduce them with ``aggregate()`` (a tensor,
as ``monai.metrics.DiceMetric``'s: ``reduction`` and ``get_not_nans`` mean what they mean there),
start over with ``reset()``. They plug into ``monai.handlers.IgniteMetricHandler`` and so into
MONAI engines (``SupervisedEvaluator(key_val_metric=..., additional_metrics=...)``).

Values are those of :func:`scribmed.metrics.dc`, :func:`~scribmed.metrics.hd95` and
:func:`~scribmed.metrics.asd` (medpy's, within 1e-6; the functions are called, nothing is
reimplemented), per item and per foreground class. ``hd95_mode="monai"`` gives MONAI's HD95
convention (max of the two directed 95th percentiles), as
``evaluate_case(..., hd95_mode="monai")`` does.

Empty masks follow :mod:`scribmed.metrics.evaluator`'s :class:`EmptyPolicy` (via
:func:`empty_event` and :func:`apply_empty_policy`). MONAI's metrics return NaN for an empty
mask, which silently drops out of ``aggregate()``'s mean (MONAI issue #9095); here the policy
decides, and every event is counted and every value left out of a mean is reported:

* the buffer (``get_buffer()``, float64 ``(items, classes)``) holds NaN exactly where the policy
  excludes a value from the mean: ``pred_empty``/``ref_empty`` HD95/ASD under ``nan_counted``,
  every empty-mask record under ``skip``; nowhere under ``worst``. ``aggregate()`` leaves these
  NaNs out as MONAI does (``get_not_nans=True`` also returns how many values each result has);
* ``get_event_buffer()`` holds the event of every value (:data:`EVENT_CODES`);
* ``summary()`` returns a :class:`MetricSummary` (per-class means over the values kept, their
  counts, the events and the exclusions per class).

Importing this module imports torch and MONAI; ``scribmed.metrics`` exposes the classes lazily
so that the rest of the package stays free of them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Union

import numpy as np
from monai.utils import MetricReduction

from scribmed.metrics.binary import (
    check_connectivity,
    dc,
    surface_distances,
)
from scribmed.metrics.evaluator import (
    EmptyPolicy,
    HD95Mode,
)
from scribmed.metrics.metric_base import _SegmentationMetric
from scribmed.metrics.metric_summary import (
    EVENT_CODES,
    ClassNames,
    MetricSummary,
)

__all__ = ["ASDMetric", "DiceMetric", "HD95Metric"]

# --------------------------------------------------------------------------------------------
# the metrics
# --------------------------------------------------------------------------------------------


class DiceMetric(_SegmentationMetric):
    """Per-class Dice, equal to :func:`scribmed.metrics.dc` (medpy's ``dc``).

    Empty masks (see :class:`~scribmed.metrics.EmptyPolicy`): ``both_empty`` scores 1,
    ``pred_empty``/``ref_empty`` 0 (included in the mean) under ``nan_counted`` and ``worst``;
    ``skip`` excludes every empty-mask record (NaN in the buffer, counted in ``excluded``).

    Args:
        num_classes: classes including background; required for label-map input, else
            inferred from one-hot input (must then stay the same until ``reset()``).
        include_background: report class 0 too (default False, as MONAI).
        class_names: one name per reported class, one per class including background (the
            first is then dropped), or an ``{index: name}`` mapping; default ``str(index)``.
        spacing: accepted for a uniform interface with the distance metrics; unused.
        empty_policy: ``"nan_counted"`` (default), ``"worst"`` or ``"skip"``.
        spatial_dims: 2 or 3; inferred when ``None`` (a 4D batch is taken as ``(B, C, H, W)``:
            pass 3 for ``(B, D, H, W)`` label maps without a channel axis).
        reduction: how ``aggregate()`` reduces the buffer, as MONAI's: ``"mean"`` (default),
            ``"sum"``, ``"mean_batch"`` (one mean per class), ``"sum_batch"``, ``"mean_channel"``,
            ``"sum_channel"`` or ``"none"`` (a ``monai.utils.MetricReduction`` or its string).
        get_not_nans: ``aggregate()`` returns ``(value, not_nans)``, the count of values
            behind each result (default False).

    Raises:
        ValueError: ``num_classes`` < 2, bad ``spatial_dims``/``reduction``/policy,
            ``class_names`` that do not fit the classes.
    """

    metric_name: ClassVar[str] = "dice"
    uses_spacing: ClassVar[bool] = False

    def _measure(self, pred: np.ndarray, ref: np.ndarray, spacing: Optional[tuple[float, ...]]) -> float:
        return dc(pred, ref)

    def _pick(self, dice: float, hd95: float, asd: float) -> float:
        return dice


class _DistanceMetric(_SegmentationMetric):
    def __init__(
        self,
        num_classes: Optional[int] = None,
        include_background: bool = False,
        class_names: ClassNames = None,
        spacing: Any = None,
        empty_policy: Union[EmptyPolicy, str] = EmptyPolicy.NAN_COUNTED,
        connectivity: int = 1,
        spatial_dims: Optional[int] = None,
        reduction: Union[MetricReduction, str] = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            include_background=include_background,
            class_names=class_names,
            spacing=spacing,
            empty_policy=empty_policy,
            spatial_dims=spatial_dims,
            reduction=reduction,
            get_not_nans=get_not_nans,
        )
        self.connectivity = check_connectivity(connectivity, 3)


class HD95Metric(_DistanceMetric):
    """Per-class 95th percentile Hausdorff distance, equal to :func:`scribmed.metrics.hd95`.

    ``hd95_mode="medpy"`` (default): 95th percentile of the pooled directed surface distances
    (medpy, the published tables); ``"monai"``: max of the two directed 95th percentiles
    (MONAI's ``compute_hausdorff_distance(percentile=95)``), as
    ``evaluate_case(..., hd95_mode="monai")``. Units: mm with a spacing, pixels without.

    Empty masks: ``both_empty`` scores 0; ``pred_empty``/``ref_empty`` are NaN in the buffer and
    left out of the mean under ``nan_counted`` (counted in ``excluded``), the image diagonal
    under ``worst``; ``skip`` excludes every empty-mask record.

    Args:
        num_classes: classes including background; required for label-map input, else
            inferred from one-hot input.
        include_background: report class 0 too (default False, as MONAI).
        class_names: one name per reported class, one per class including background, or an
            ``{index: name}`` mapping; default ``str(index)``.
        spacing: default mm per spatial axis (or one number) for calls that pass none;
            ``None`` → pixels.
        empty_policy: ``"nan_counted"`` (default), ``"worst"`` or ``"skip"``.
        hd95_mode: ``"medpy"`` (default) or ``"monai"``.
        connectivity: erosion neighbourhood defining surfaces (1 = faces, default, as medpy).
        spatial_dims: 2 or 3; inferred when ``None`` (pass 3 for ``(B, D, H, W)`` label maps).
        reduction: how ``aggregate()`` reduces the buffer (MONAI's ``MetricReduction``;
            ``"mean"`` default, ``"mean_batch"`` one mean per class), as :class:`DiceMetric`.
        get_not_nans: ``aggregate()`` returns ``(value, not_nans)`` (default False).

    Raises:
        ValueError: bad ``num_classes``, ``spacing``, ``hd95_mode``, ``connectivity``, policy,
            ``spatial_dims``, ``reduction`` or ``class_names``.
    """

    metric_name: ClassVar[str] = "hd95"

    def __init__(
        self,
        num_classes: Optional[int] = None,
        include_background: bool = False,
        class_names: ClassNames = None,
        spacing: Any = None,
        empty_policy: Union[EmptyPolicy, str] = EmptyPolicy.NAN_COUNTED,
        hd95_mode: Union[HD95Mode, str] = HD95Mode.MEDPY,
        connectivity: int = 1,
        spatial_dims: Optional[int] = None,
        reduction: Union[MetricReduction, str] = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        self.hd95_mode = HD95Mode(hd95_mode)
        super().__init__(
            num_classes=num_classes,
            include_background=include_background,
            class_names=class_names,
            spacing=spacing,
            empty_policy=empty_policy,
            connectivity=connectivity,
            spatial_dims=spatial_dims,
            reduction=reduction,
            get_not_nans=get_not_nans,
        )

    def _measure(self, pred: np.ndarray, ref: np.ndarray, spacing: Optional[tuple[float, ...]]) -> float:
        sd = surface_distances(pred, ref, spacing, self.connectivity)
        return sd.hd95() if self.hd95_mode is HD95Mode.MEDPY else sd.hd95_monai()

    def _pick(self, dice: float, hd95: float, asd: float) -> float:
        return hd95

    def _hd95_mode(self) -> Optional[str]:
        return self.hd95_mode.value


class ASDMetric(_DistanceMetric):
    """Per-class average surface distance prediction → reference, equal to :func:`scribmed.metrics.asd`.

    Directed, as medpy's ``asd`` and MONAI's ``SurfaceDistanceMetric(symmetric=False)``.
    Units and empty masks as :class:`HD95Metric` (``both_empty`` 0; ``pred_empty``/``ref_empty``
    NaN-excluded under ``nan_counted``, the image diagonal under ``worst``; ``skip`` excludes).

    Args:
        num_classes: classes including background; required for label-map input, else
            inferred from one-hot input.
        include_background: report class 0 too (default False, as MONAI).
        class_names: one name per reported class, one per class including background, or an
            ``{index: name}`` mapping; default ``str(index)``.
        spacing: default mm per spatial axis (or one number); ``None`` → pixels.
        empty_policy: ``"nan_counted"`` (default), ``"worst"`` or ``"skip"``.
        connectivity: erosion neighbourhood defining surfaces (1 = faces, default).
        spatial_dims: 2 or 3; inferred when ``None`` (pass 3 for ``(B, D, H, W)`` label maps).
        reduction: how ``aggregate()`` reduces the buffer (MONAI's ``MetricReduction``;
            ``"mean"`` default, ``"mean_batch"`` one mean per class), as :class:`DiceMetric`.
        get_not_nans: ``aggregate()`` returns ``(value, not_nans)`` (default False).

    Raises:
        ValueError: bad ``num_classes``, ``spacing``, ``connectivity``, policy,
            ``spatial_dims``, ``reduction`` or ``class_names``.
    """

    metric_name: ClassVar[str] = "asd"

    def _measure(self, pred: np.ndarray, ref: np.ndarray, spacing: Optional[tuple[float, ...]]) -> float:
        return surface_distances(pred, ref, spacing, self.connectivity).asd()

    def _pick(self, dice: float, hd95: float, asd: float) -> float:
        return asd

