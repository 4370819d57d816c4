"""Cross-validation: the runner, fold evaluation, folds as jobs, their status, the merge, post-processing.

``runner`` (:func:`run_cross_validation`, :func:`merge_folds`: the nnU-Net-style run folder with
``fold_k/`` and pooled out-of-fold summaries), ``fold_evaluation`` (semantic or instance, by the
recipe's ``task``), ``executors`` (submitit local pool and Slurm arrays), ``fold_jobs`` (a fold
or its SAM stage as a job, its records), ``fold_status`` (``scribmed cv status``), ``postprocessing``
(nnU-Net's keep-largest-component rule on the pooled out-of-fold predictions) and
``postprocessing_record`` (``scribmed cv postprocess``: the run's ``postprocessing.json``).
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
    "POSTPROCESSING_RECORD": "scribmed.crossval.postprocessing_record",
    "PREPARE_DONE": "scribmed.crossval.runner",
    "PostprocessingDecision": "scribmed.crossval.postprocessing",
    "PostprocessingPlan": "scribmed.crossval.postprocessing",
    "RUN_RECORD": "scribmed.crossval.runner",
    "STAGES": "scribmed.crossval.fold_jobs",
    "SemanticEvaluation": "scribmed.crossval.fold_evaluation",
    "SlurmOptions": "scribmed.crossval.executors",
    "active_folds": "scribmed.crossval.fold_status",
    "decide_postprocessing": "scribmed.crossval.postprocessing",
    "evaluation_for": "scribmed.crossval.fold_evaluation",
    "fold_states": "scribmed.crossval.fold_status",
    "format_status": "scribmed.crossval.fold_status",
    "job_record_path": "scribmed.crossval.fold_jobs",
    "merge_folds": "scribmed.crossval.runner",
    "open_run": "scribmed.crossval.runner",
    "plan_jobs": "scribmed.crossval.executors",
    "postprocess_run": "scribmed.crossval.postprocessing_record",
    "read_fold_record": "scribmed.crossval.runner",
    "read_job_record": "scribmed.crossval.fold_jobs",
    "read_postprocessing_plan": "scribmed.crossval.postprocessing_record",
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
