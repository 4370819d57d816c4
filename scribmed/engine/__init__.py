"""Training, slice-wise volume inference, cross-validation and distributed helpers.

Modules: ``config`` (TrainConfig), ``trainer`` (the training loop), ``validation``,
``run_record`` (checkpoints, history, resume), ``training`` (builders), ``samsp_trainer``,
``slice_cache`` and ``sampling`` (the data pipeline), ``inference``, ``checkpoint``,
``cross_validation``, ``distributed``, ``device``, ``seeding``, ``ema_teacher`` (an EMA teacher
and the SeSAM objective). Names are imported lazily
(PEP 562) so that light modules do not pull in MONAI's engines and the networks.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "resolve_device": "scribmed.engine.device",
    "amp_enabled": "scribmed.engine.device",
    "SliceCache": "scribmed.engine.slice_cache",
    "EpochSeededSampler": "scribmed.engine.sampling",
    "SliceTrainingDataset": "scribmed.engine.sampling",
    "save_checkpoint": "scribmed.engine.checkpoint",
    "load_checkpoint": "scribmed.engine.checkpoint",
    "load_network_weights": "scribmed.engine.checkpoint",
    "file_sha256": "scribmed.files",
    "predict_volume": "scribmed.engine.inference",
    "predict_cases": "scribmed.engine.inference",
    "DMPLSTrainer": "scribmed.engine.trainer",
    "RunRecorder": "scribmed.engine.run_record",
    "EMATeacher": "scribmed.engine.ema_teacher",
    "SeSAMConfig": "scribmed.engine.ema_teacher",
    "SeSAMObjective": "scribmed.engine.ema_teacher",
    "assemble_trainer": "scribmed.engine.training",
    "run_cross_validation": "scribmed.engine.cross_validation",
    "merge_folds": "scribmed.engine.cross_validation",
    "VolumeDiceEvaluator": "scribmed.engine.validation",
    "TrainConfig": "scribmed.engine.config",
    "TrainResult": "scribmed.engine.config",
    "build_dmpls_trainer": "scribmed.engine.training",
    "train_dmpls": "scribmed.engine.training",
    "plot_training_curve": "scribmed.engine.run_record",
    "DistContext": "scribmed.engine.distributed",
    "init_distributed": "scribmed.engine.distributed",
    "cleanup_distributed": "scribmed.engine.distributed",
    "is_main_process": "scribmed.engine.distributed",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scribmed.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
