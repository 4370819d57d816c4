"""Cross-validation: the runner, fold evaluation, folds as jobs, their status, the merge.

``runner`` (:func:`run_cross_validation`, :func:`merge_folds`: the nnU-Net-style run folder with
``fold_k/`` and pooled out-of-fold summaries), ``fold_evaluation`` (semantic or instance, by the
recipe's ``task``), ``executors`` (submitit local pool and Slurm arrays), ``fold_jobs`` (a fold
or its SAM stage as a job, its records) and ``fold_status`` (``scribmed cv status``).
"""

from __future__ import annotations

from scribmed.runtime.lazy_exports import lazy_exports

_EXPORTS = {
    "ACTIVE": "scribmed.crossval.fold_status",
    "CVRun": "scribmed.crossval.runner",
    "EVALUATIONS": "scribmed.crossval.fold_evaluation",
    "EXECUTORS": "scribmed.crossval.executors",
    "FOLD_DONE": "scribmed.crossval.runner",
    "FoldEvaluation": "scribmed.crossval.fold_evaluation",
    "FoldJob": "scribmed.crossval.fold_jobs",
    "InstanceEvaluation": "scribmed.crossval.fold_evaluation",
    "JobFailure": "scribmed.crossval.executors",
    "PREPARE_DONE": "scribmed.crossval.runner",
    "RUN_RECORD": "scribmed.crossval.runner",
    "STAGES": "scribmed.crossval.fold_jobs",
    "SemanticEvaluation": "scribmed.crossval.fold_evaluation",
    "SlurmOptions": "scribmed.crossval.executors",
    "active_folds": "scribmed.crossval.fold_status",
    "evaluation_for": "scribmed.crossval.fold_evaluation",
    "fold_states": "scribmed.crossval.fold_status",
    "format_status": "scribmed.crossval.fold_status",
    "job_record_path": "scribmed.crossval.fold_jobs",
    "merge_folds": "scribmed.crossval.runner",
    "open_run": "scribmed.crossval.runner",
    "plan_jobs": "scribmed.crossval.executors",
    "read_fold_record": "scribmed.crossval.runner",
    "read_job_record": "scribmed.crossval.fold_jobs",
    "read_run_record": "scribmed.crossval.runner",
    "read_submission": "scribmed.crossval.fold_jobs",
    "require_submitit": "scribmed.crossval.executors",
    "run_cross_validation": "scribmed.crossval.runner",
    "run_fold": "scribmed.crossval.runner",
    "run_local": "scribmed.crossval.executors",
    "submit_slurm": "scribmed.crossval.executors",
    "update_job_record": "scribmed.crossval.fold_jobs",
    "write_fold_record": "scribmed.crossval.runner",
    "write_submission": "scribmed.crossval.fold_jobs",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
