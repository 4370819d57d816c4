"""One training loop for every recipe and what it is built from.

:class:`SegmentorTrainer` (``trainer``) runs a recipe's objective through its hooks
(``compute_loss`` for the semantic recipes; ``instance_trainer`` overrides the learning rate,
forward pass, loss, post-step and state hooks for the instance recipes); ``assembly`` builds the
semantic trainer (network, seeded data pipeline, SGD, validation, run record) and runs or resumes
any trainer; ``config`` is the semantic schedule (:class:`TrainConfig`); ``sampling`` /
``slice_cache`` / ``deferred_dataset`` / ``instance_batches`` the data pipelines; ``validation``
the evaluators (volume Dice, instance DSB score); ``run_record`` checkpoints, history and exact
resume; ``training_curve`` its figure; ``inference`` / ``instance_inference`` prediction;
``ema_teacher`` a mean teacher for any trainer.
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
    "BatchMix": "scribmed.training.instance_batches",
    "CropBatchDataset": "scribmed.training.instance_batches",
    "InstanceObjective": "scribmed.training.instance_trainer",
    "InstanceScoreEvaluator": "scribmed.training.validation",
    "InstanceTask": "scribmed.training.instance_trainer",
    "InstanceTrainer": "scribmed.training.instance_trainer",
    "IterationSampler": "scribmed.training.sampling",
    "MeanScore": "scribmed.training.validation",
    "RecordedConfig": "scribmed.training.run_record",
    "assemble_instance_trainer": "scribmed.training.instance_trainer",
    "cosine_lr": "scribmed.training.instance_trainer",
    "read_history": "scribmed.training.training_curve",
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
    "TrainSample": "scribmed.training.instance_batches",
    "VolumeDiceEvaluator": "scribmed.training.validation",
    "assemble_trainer": "scribmed.training.assembly",
    "check_resumable": "scribmed.training.run_record",
    "confident_labels": "scribmed.training.ema_teacher",
    "make_training_curve_figure": "scribmed.training.training_curve",
    "materialize_on_start": "scribmed.training.deferred_dataset",
    "normalise_image": "scribmed.training.instance_inference",
    "plot_training_curve": "scribmed.training.training_curve",
    "poly_lr": "scribmed.training.config",
    "predict_cases": "scribmed.training.inference",
    "predict_instances": "scribmed.training.instance_inference",
    "predict_probabilities": "scribmed.training.instance_inference",
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
