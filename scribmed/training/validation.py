"""Validation during training, on the fold's **validation** cases (never its test cases).

:class:`VolumeDiceEvaluator` (a ``SupervisedEvaluator``) validates the semantic recipes by
slice-wise volume inference at native resolution; its key metric ``val_mean_dice`` is
:class:`MeanForegroundDice`, computed with :func:`scribmed.metrics.dc` (medpy's Dice).
:class:`InstanceScoreEvaluator` validates the instance recipes on whole images; its key metric
``val_dsb_score`` is the mean DSB2018 score (:func:`scribmed.metrics.instance.dsb_score`).
Each names its key metric (``metric_key``) and how plots label it (``metric_label``) for the
:class:`~scribmed.training.run_record.RunRecorder`.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator

from scribmed.data.case import Case, ClassMap
from scribmed.data.errors import DataError
from scribmed.runtime.device import AmpRequest, amp_enabled
from scribmed.training.inference import predict_volume
from scribmed.training.instance_inference import predict_instances
from scribmed.metrics.binary import dc

__all__ = ["InstanceScoreEvaluator", "MeanForegroundDice", "MeanScore", "VolumeDiceEvaluator"]

logger = logging.getLogger(__name__)



class MeanForegroundDice(Metric):
    """Mean over cases of the per-case mean foreground Dice; per-class means in ``per_class``.

    Expects engine outputs with ``"dice"``: a ``(n_foreground,)`` array for one case.
    """

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self.per_class: dict[str, float] = {}
        super().__init__(output_transform=lambda out: out["dice"])

    def reset(self) -> None:
        self._rows: list[np.ndarray] = []

    def update(self, output: np.ndarray) -> None:
        self._rows.append(np.asarray(output, dtype=np.float64))

    def compute(self) -> float:
        if not self._rows:
            raise RuntimeError("MeanForegroundDice: no case was evaluated")
        table = np.stack(self._rows)
        self.per_class = {n: float(v) for n, v in zip(self.class_names, table.mean(axis=0))}
        return float(table.mean(axis=1).mean())


class MeanScore(Metric):
    """Mean over cases of a per-case score (engine outputs with ``"score"``)."""

    def __init__(self) -> None:
        super().__init__(output_transform=lambda out: out["score"])

    def reset(self) -> None:
        self._scores: list[float] = []

    def update(self, output: float) -> None:
        self._scores.append(float(output))

    def compute(self) -> float:
        if not self._scores:
            raise RuntimeError("MeanScore: no case was evaluated")
        return float(np.mean(self._scores))


class VolumeDiceEvaluator(SupervisedEvaluator):
    """Validation by slice-wise volume inference on whole cases at native resolution.

    Its data is the list of validation :class:`Case` objects (one engine iteration per case);
    the key metric ``val_mean_dice`` is :class:`MeanForegroundDice`.

    Args:
        device: where to infer.
        cases: validation cases (with labels).
        network: the (unwrapped) segmentation network.
        class_map: classes; Dice is computed for its foreground labels.
        size: network input ``(h, w)``.
        batch_size: slices per forward pass.
        amp: the mixed-precision request of :func:`~scribmed.runtime.device.amp_policy` (float32
            on the CPU whatever is asked).
        image_mode: image resizing to ``size`` (``"bilinear"`` or ``"nearest"``), as in training.
    """

    metric_key = "val_mean_dice"
    metric_label = "validation mean foreground Dice"

    def __init__(
        self,
        device: torch.device,
        cases: Sequence[Case],
        network: torch.nn.Module,
        class_map: ClassMap,
        size: Sequence[int],
        batch_size: int = 16,
        amp: AmpRequest = False,
        image_mode: str = "bilinear",
    ) -> None:
        self.cases = list(cases)
        self.image_mode = image_mode
        self.amp_request = amp
        self.class_map = class_map
        self.size = tuple(int(s) for s in size)
        self.batch_size = int(batch_size)
        self.metric = MeanForegroundDice([class_map.names[k] for k in class_map.foreground])
        super().__init__(
            device=device,
            val_data_loader=self.cases,
            network=network,
            epoch_length=len(self.cases),
            key_val_metric={self.metric_key: self.metric},
            amp=amp_enabled(device, amp) and torch.device(device).type == "cuda",  # MONAI's flag builds a CUDA scaler
            decollate=False,
        )

    def _iteration(self, engine: Any, batchdata: Case) -> dict:
        case = batchdata
        label = case.label
        if label is None:
            raise DataError(case.source, f"validation case {case.case_id} has no label")
        pred = predict_volume(
            engine.network, case.image, size=self.size, batch_size=self.batch_size, device=engine.state.device,
            amp=self.amp_request, image_mode=self.image_mode,
        )
        if pred.shape != label.shape:
            raise DataError(case.source, f"label shape {label.shape} differs from the image's {pred.shape}")
        dice = np.array([dc(pred == k, label == k) for k in self.class_map.foreground])
        return {"dice": dice, "case_id": case.case_id}


class InstanceScoreEvaluator(SupervisedEvaluator):
    """Validation of an instance recipe: whole-image instance prediction, mean DSB2018 score.

    Its data is the list of ``(case_id, normalised image (C, H, W), reference instance map
    (H, W))`` items (one engine iteration each); instances come from the recipe's
    post-processing.

    Args:
        device: where to infer.
        items: the validation images.
        network: the network validated (the student, or the EMA teacher's network).
        postprocess / min_size: :func:`~scribmed.training.instance_inference.predict_instances`'s.
    """

    metric_key = "val_dsb_score"
    metric_label = "validation DSB score"

    def __init__(
        self,
        device: torch.device,
        items: Sequence[tuple[str, np.ndarray, np.ndarray]],
        network: torch.nn.Module,
        postprocess: str = "watershed",
        min_size: int = 10,
    ) -> None:
        self.items = list(items)
        self.postprocess = postprocess
        self.min_size = int(min_size)
        self.metric = MeanScore()
        super().__init__(
            device=device,
            val_data_loader=self.items,
            network=network,
            epoch_length=len(self.items),
            key_val_metric={self.metric_key: self.metric},
            decollate=False,
        )

    def _iteration(self, engine: Any, batchdata: tuple[str, np.ndarray, np.ndarray]) -> dict:
        from scribmed.metrics.instance import dsb_score

        case_id, image, reference = batchdata
        pred = predict_instances(engine.network, image, engine.state.device, self.postprocess, self.min_size)
        return {"score": dsb_score(pred, reference), "case_id": case_id}
