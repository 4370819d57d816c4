"""One training loop for the segmentor recipes and what it is built from.

:class:`SegmentorTrainer` (``trainer``) runs a recipe's objective through one hook,
``compute_loss``; ``assembly`` builds it (network, seeded data pipeline, SGD, validation, run
record) and runs or resumes it; ``config`` is the shared schedule (:class:`TrainConfig`);
``sampling`` / ``slice_cache`` / ``deferred_dataset`` the data pipeline; ``validation`` the
volume Dice evaluator; ``run_record`` checkpoints, history and exact resume; ``inference``
slice-wise volume prediction; ``ema_teacher`` a mean teacher for any trainer;
``instance_trainer`` the instance recipes' loop (contour U-Net).
"""

from __future__ import annotations

from scribmed.runtime.lazy_exports import lazy_exports

_EXPORTS = {
    "BEST_NAME": "scribmed.training.run_record",
    "BUFFER_MODES": "scribmed.training.ema_teacher",
    "CHECKSUMS_NAME": "scribmed.training.run_record",
    "CURVE_NAME": "scribmed.training.run_record",
    "DeferredDataset": "scribmed.training.deferred_dataset",
    "EMATeacher": "scribmed.training.ema_teacher",
    "EpochSeededSampler": "scribmed.training.sampling",
    "HISTORY_NAME": "scribmed.training.run_record",
    "InstanceObjective": "scribmed.training.instance_trainer",
    "InstanceTrainConfig": "scribmed.training.instance_trainer",
    "LAST_NAME": "scribmed.training.run_record",
    "MeanForegroundDice": "scribmed.training.validation",
    "RunRecorder": "scribmed.training.run_record",
    "SeSAMConfig": "scribmed.training.ema_teacher",
    "SeSAMObjective": "scribmed.training.ema_teacher",
    "SegmentorTrainer": "scribmed.training.trainer",
    "SliceCache": "scribmed.training.slice_cache",
    "SliceTrainingDataset": "scribmed.training.sampling",
    "StudentOutput": "scribmed.training.instance_trainer",
    "TrainConfig": "scribmed.training.config",
    "TrainResult": "scribmed.training.config",
    "TrainSample": "scribmed.training.instance_trainer",
    "VolumeDiceEvaluator": "scribmed.training.validation",
    "assemble_trainer": "scribmed.training.assembly",
    "check_resumable": "scribmed.training.run_record",
    "confident_labels": "scribmed.training.ema_teacher",
    "make_training_curve_figure": "scribmed.training.run_record",
    "materialize_on_start": "scribmed.training.deferred_dataset",
    "normalise_image": "scribmed.training.instance_trainer",
    "plot_training_curve": "scribmed.training.run_record",
    "poly_lr": "scribmed.training.config",
    "predict_cases": "scribmed.training.inference",
    "predict_instances": "scribmed.training.instance_trainer",
    "predict_to_folder": "scribmed.training.inference",
    "predict_volume": "scribmed.training.inference",
    "preserved_rng": "scribmed.training.deferred_dataset",
    "run_or_resume": "scribmed.training.run_record",
    "run_training": "scribmed.training.assembly",
    "slice_permutation": "scribmed.training.sampling",
    "train_instance_segmentor": "scribmed.training.instance_trainer",
    "unwrap_network": "scribmed.training.inference",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
