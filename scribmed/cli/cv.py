"""``scribmed cv``: k-fold cross-validation of a recipe, in this process, under torchrun, or as jobs
(``--executor local|slurm``); ``cv merge``, ``cv status``, ``cv compare``, ``cv postprocess``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional

from scribmed.cli.options import (
    fold_list,
    LAYOUT_NAMES,
    MergeSet,
    add_common,
    key_value,
    open_from_args,
    spacing_mm,
)
from scribmed.data.errors import DataError


def _apply_supervision(args: argparse.Namespace, dataset) -> Optional[dict]:
    """``--supervision FILE`` / ``--supervision-mix MIX`` applied to the opened dataset; its run.json record."""
    from scribmed.data.supervision_assignment import apply_supervision_source

    return apply_supervision_source(dataset, args.supervision, args.supervision_mix, args.supervision_seed,
                                    bool(args.simulate_weak))


def _cv_setup(args: argparse.Namespace):
    """``(recipe, dataset, supervision record)`` of a ``scribmed cv`` command line."""
    missing = [f"--{n}" for n in ("recipe", "layout", "root", "out") if getattr(args, n) is None]
    if missing:
        raise DataError(None, f"scribmed cv needs {', '.join(missing)} (see scribmed cv --help)")
    from scribmed import recipes

    cls = recipes.get(args.recipe)
    dataset = open_from_args(args)
    supervision = _apply_supervision(args, dataset)
    own = set(getattr(args, "_recipe_flags", {}).get(args.recipe, ()))
    foreign = [
        f"--{dest.replace('_', '-')} (--recipe {owner})"
        for owner, dests in getattr(args, "_recipe_flags", {}).items() if owner != args.recipe
        for dest in dests if dest not in own and getattr(args, dest, None) is not None
    ]
    if foreign:
        raise DataError(None, f"{', '.join(foreign)} do not apply to --recipe {args.recipe}")
    overrides = {k: getattr(args, k) for k in own if getattr(args, k, None) is not None}
    overrides.update(args.set or {})
    return cls.from_options(**overrides), dataset, supervision


def _requested_folds(args: argparse.Namespace) -> Optional[list[int]]:
    return [args.fold] if args.fold is not None else args.folds


def _run_cv(args: argparse.Namespace) -> Optional[Path]:
    """The folds of ``args`` in this process (all ranks of it under torchrun); the summary path when merged."""
    from scribmed.runtime import distributed as dist_utils
    from scribmed.crossval.runner import run_cross_validation

    under_torchrun = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    if under_torchrun:
        dist_utils.init_distributed(getattr(args, "device", None) or "auto")
    try:
        recipe, dataset, supervision = _cv_setup(args)
        return run_cross_validation(
            recipe, dataset, args.split, args.out, folds=_requested_folds(args), allow_missing=args.allow_missing,
            progress=not args.quiet and dist_utils.is_main_process(), merge=not args.no_merge,
            supervision=supervision, stage=args.stage, check_data=getattr(args, "check_data", True),
        )
    finally:
        if under_torchrun:
            dist_utils.cleanup_distributed()


def _cv_job(args: argparse.Namespace, fold: int, stage: str) -> None:
    """One job of ``scribmed cv --executor ...``: the same command line, restricted to ``fold`` and ``stage``."""
    if getattr(args, "figures", None):  # a Slurm job may not see the submitter's environment
        from scribmed.runtime.figures import set_figure_formats

        set_figure_formats(args.figures)
    job = argparse.Namespace(**vars(args))
    job.fold, job.folds, job.executor, job.no_merge = int(fold), None, "sequential", True
    job.check_data = False  # the submitting command checked every case of the run's folds
    job.stage = "prepare" if stage == "prepare" else "all"
    _run_cv(job)


def _submit_cv(args: argparse.Namespace) -> int:
    """``scribmed cv --executor local|slurm``: check the run, plan its jobs, run (local) or submit (slurm) them."""
    import functools

    from scribmed.crossval.runner import merge_folds, open_run
    from scribmed.crossval.executors import (
        SlurmOptions,
        plan_jobs,
        require_submitit,
        run_local,
        submit_slurm,
    )
    from scribmed.crossval.fold_jobs import FoldJob
    from scribmed.crossval.fold_status import active_folds, fold_states, format_status

    require_submitit()
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise DataError(None, "--executor starts its own jobs; run it without torchrun (--slurm-tasks-per-node N "
                        "trains each fold with DDP on the cluster)")
    recipe, dataset, supervision = _cv_setup(args)
    if args.executor == "slurm" and args.slurm_tasks_per_node > 1 and not getattr(recipe, "distributed", False):
        raise DataError(None, f"--slurm-tasks-per-node {args.slurm_tasks_per_node}: recipe {recipe.name!r} does not "
                        "train with DDP; give each fold one process")
    if args.executor != "slurm":  # the jobs run on this machine: refuse what it cannot run now
        recipe.check_device()
    run = open_run(recipe, dataset, args.split, args.out, allow_missing=args.allow_missing, supervision=supervision)
    folds = run.folds(_requested_folds(args))
    run.check_data(dataset, folds, progress=not args.quiet)  # before any job is submitted
    busy = {} if args.resubmit else active_folds(run.out, folds)
    for k, row in sorted(busy.items()):
        print(f"fold {k}: {row['stage']} job {row['job_id']} is {row['state']}; not submitted again (--resubmit to force)")
    jobs = plan_jobs(run.out, [k for k in folds if k not in busy],
                     has_prepare=bool(getattr(recipe, "prepare_stage", None)))
    if args.stage == "prepare":
        jobs = [j for j in jobs if j[1] == "prepare"]
    tasks = args.slurm_tasks_per_node if args.executor == "slurm" else 1
    merge = () if args.no_merge or args.stage == "prepare" else folds
    run_one = functools.partial(_cv_job, args)

    # each job's share of the cores: --workers jobs on this machine, or a Slurm task's --slurm-cpus-per-task
    from scribmed.runtime.device import thread_share

    threads = args.slurm_cpus_per_task if args.executor == "slurm" else thread_share(args.workers)

    def make_job(fold: int, stage: str) -> FoldJob:
        return FoldJob(run_one, run.out, fold, stage, merge_folds=merge, tasks=tasks, threads=threads)

    if args.executor == "slurm":
        options = SlurmOptions(
            partition=args.slurm_partition, gpus_per_node=args.slurm_gpus_per_node, tasks_per_node=tasks,
            cpus_per_task=args.slurm_cpus_per_task, mem=args.slurm_mem, timeout_min=args.slurm_timeout,
            array_parallelism=args.slurm_array_parallelism, setup=list(args.slurm_setup or []),
            max_requeues=args.max_requeues,
        )
        rows = submit_slurm(jobs, make_job, run.out, options)
        for row in rows:
            print(f"fold {row['fold']} {row['stage']}: Slurm job {row['job_id']} (log {row['log']})")
        if not rows:
            print("every requested fold is finished: nothing to submit")
        print(f"follow it with: scribmed cv status {run.out}")
        return 0
    import torch

    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    failures = run_local(jobs, make_job, run.out, workers=args.workers, gpus=gpus,
                         timeout_min=args.job_timeout, progress=not args.quiet,
                         max_requeues=args.max_requeues)
    if failures:
        print(format_status(fold_states(run.out)), end="", file=sys.stderr)
        raise DataError(run.out, f"{len(failures)} job(s) did not finish ({failures[0]}); rerun the same command "
                        "to resume them")
    if merge:
        summary = merge_folds(run.out)
        print((summary.parent / "summary.md").read_text())
        print(f"summary: {summary}")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from scribmed.crossval.runner import merge_folds

    if args.action:
        if args.action[0] == "compare" and len(args.action) >= 2:
            from scribmed.evaluation.comparison import compare_runs

            print(compare_runs([Path(a) for a in args.action[1:]], args.out), end="")
            if args.out is not None:
                print(f"table: {args.out}")
            return 0
        if args.action[0] == "status" and len(args.action) == 2:
            from scribmed.crossval.fold_status import fold_states, format_status

            print(format_status(fold_states(Path(args.action[1]))), end="")
            return 0
        if args.action[0] == "postprocess" and len(args.action) == 2:
            return _postprocess(Path(args.action[1]), progress=not args.quiet)
        if args.action[0] != "merge" or len(args.action) != 2:
            raise DataError(
                None, f"unknown cv action {' '.join(args.action)!r}; use 'scribmed cv merge DIR', "
                "'scribmed cv status DIR', 'scribmed cv postprocess DIR' or 'scribmed cv compare DIR DIR ...'"
            )
        summary = merge_folds(Path(args.action[1]))
        print((summary.parent / "summary.md").read_text())
        _say_missing(Path(args.action[1]))
        print(f"summary: {summary}")
        return 0
    if args.executor != "sequential":
        return _submit_cv(args)
    if args.workers != 1:
        raise DataError(None, "--workers applies to --executor local")
    finished_before = _finished(args.out)
    summary = _run_cv(args)
    if int(os.environ.get("RANK", "0") or 0) != 0:  # under torchrun rank 0 alone reports
        return 0
    requested = _requested_folds(args)
    for k in sorted(finished_before):
        if requested is None or k in requested:
            print(f"fold {k} finished earlier: skipped (delete {args.out / f'fold_{k}'} to run it again)")
    if summary is not None:
        print((summary.parent / "summary.md").read_text())
        _say_missing(args.out)
        print(f"summary: {summary}")
    else:
        done = sorted(_finished(args.out) - finished_before)
        print(f"folds {', '.join(map(str, done))} finished: {args.out}" if done else f"run folder: {args.out}")
    return 0


def _postprocess(run_dir: Path, progress: bool) -> int:
    """``scribmed cv postprocess DIR``: decide the run's post-processing, print its table and where it wrote."""
    from scribmed.crossval.postprocessing_record import POSTPROCESSING_TABLE, postprocess_run

    record = postprocess_run(run_dir, progress=progress)
    print((run_dir / POSTPROCESSING_TABLE).read_text())
    print(f"post-processing: {record} (table: {run_dir / POSTPROCESSING_TABLE}); scribmed predict --run applies it")
    return 0


def _finished(out: Path) -> set[int]:
    """Folds of the run folder ``out`` with a ``fold.json``."""
    from scribmed.crossval.runner import finished_folds

    return set(finished_folds(out))


def _say_missing(out: Path) -> None:
    """Name the folds a merged summary leaves out (not finished yet)."""
    from scribmed.crossval.runner import empty_folds, missing_folds

    missing, total = missing_folds(out)
    empty = [k for k in empty_folds(out) if k in missing]
    pending = [k for k in missing if k not in empty]
    if missing:
        parts = [f"not finished: {', '.join(map(str, pending))}"] if pending else []
        if empty:
            parts.append(f"no test or training patients in this dataset, never run: {', '.join(map(str, empty))}")
        print(f"merged {total - len(missing)} of {total} folds; {'; '.join(parts)} "
              "(the summary covers the finished ones only)")


def add_parser(sub: Any, recipe_flags: bool | str = True) -> None:
    """Register the command(s) on the ``scribmed`` subparsers."""
    cv = sub.add_parser(
        "cv",
        help="k-fold cross-validation of a recipe (or 'cv merge DIR' to merge finished folds)",
        description="Train each fold on its training patients, select the checkpoint on its validation "
        "patients, predict and evaluate its test patients, and write fold_k/ folders plus summary.json, "
        "summary.md and plots into --out. Finished folds are skipped on a rerun; unfinished ones resume. "
        "'scribmed cv merge DIR' merges folds computed elsewhere (e.g. one --fold per node).",
    )
    cv.add_argument("action", nargs="*", help="'merge DIR' to merge finished folds of DIR; 'status DIR' for each "
                    "fold's state; 'postprocess DIR' to choose nnU-Net's keep-largest-component post-processing on "
                    "the out-of-fold predictions (written to DIR/postprocessing.json, applied by predict --run); "
                    "'compare DIR DIR ...' for a side-by-side table of runs on the same cases "
                    "(--out FILE.md to save it)")
    from scribmed import recipes as recipe_registry

    cv.add_argument("--recipe", choices=recipe_registry.names(), help="method to train (scribmed.recipes)")
    cv.add_argument("--layout", choices=LAYOUT_NAMES)
    cv.add_argument("--root", type=Path, help="dataset folder as distributed")
    cv.add_argument("--split", default="auto", help="split JSON, a shipped split's name, or auto / auto:K (seeded 5-fold / K-fold split by patient, saved in --out)")
    cv.add_argument("--out", type=Path, help="run directory")
    cv.add_argument("--folds", type=fold_list, help="1-based folds to run, e.g. 1,3 (default all)")
    cv.add_argument("--fold", type=int, help="run this single fold (1-based); merge later with 'cv merge'")
    cv.add_argument("--spacing", type=spacing_mm, help="dz,dy,dx in mm for layouts that store none")
    cv.add_argument("--scribble-style", choices=("abdominal", "scribblebench"),
                    help="chaos-t2-nifti: style of the scribbles synthesised from its labels (default abdominal: "
                    "ACDC-like arcs; scribblebench: interior curves + partial boundaries, some slices left out)")
    cv.add_argument("--allow-missing", action="store_true", help="drop split patients absent from the dataset")
    cv.add_argument("--no-merge", action="store_true", help="do not write the across-fold summary")
    cv.add_argument("--supervision", type=Path, metavar="FILE",
                    help="supervision.json manifest (case id -> full/box/point/scribble/none) applied to the "
                    "dataset; recorded in run.json (recipes refuse types they cannot train from)")
    cv.add_argument("--supervision-mix", dest="supervision_mix", metavar="MIX",
                    help="simulate a supervision mix over the patients, e.g. full=0.1,box=0.3,point=0.3,"
                    "scribble=0.3 (boxes and points from the labels, as 'scribmed weak make')")
    cv.add_argument("--supervision-seed", dest="supervision_seed", type=int, default=0,
                    help="seed of --supervision-mix and of simulated weak labels (default 0)")
    cv.add_argument("--simulate-weak", dest="simulate_weak", action="store_true",
                    help="with --supervision: simulate box/point labels the dataset lacks from its full labels")
    cv.add_argument("--set", dest="set", action=MergeSet, type=key_value, metavar="KEY=VALUE",
                    help="override any field of the recipe's config (repeatable), e.g. --set lam=0.3")
    cv.add_argument("--stage", choices=("all", "prepare"), default="all",
                    help="all (default), or prepare: only the recipe's stage before training (SAM pseudo labels), "
                    "e.g. as its own job")
    jobs = cv.add_argument_group("folds as jobs (submitit; see docs/cluster.md)")
    jobs.add_argument("--executor", choices=("sequential", "local", "slurm"), default="sequential",
                      help="sequential (default: folds one after another in this process), local (each fold and its "
                      "SAM stage a job on this machine, --workers at once, one GPU each) or slurm (job arrays)")
    jobs.add_argument("--workers", type=int, default=1,
                      help="local executor: jobs at once, each with its share of the CPU threads (default 1)")
    jobs.add_argument("--job-timeout", dest="job_timeout", type=float, default=60 * 24 * 7,
                      help="local executor: minutes before a job is signalled and requeued (default one week)")
    jobs.add_argument("--resubmit", action="store_true",
                      help="submit folds whose earlier job still looks pending or running (e.g. cancelled outside "
                      "scribmed, without sacct to tell)")
    jobs.add_argument("--max-requeues", dest="max_requeues", type=int, default=3,
                      help="requeues of a preempted or timed-out job (default 3); each resumes from last.pt")
    jobs.add_argument("--slurm-partition", dest="slurm_partition", help="Slurm partition (default: the cluster's)")
    jobs.add_argument("--slurm-gpus-per-node", dest="slurm_gpus_per_node", type=int, default=1,
                      help="GPUs per job (default 1: one fold per GPU)")
    jobs.add_argument("--slurm-tasks-per-node", dest="slurm_tasks_per_node", type=int, default=1,
                      help="processes per job; N > 1 trains the fold with DDP over N GPUs (set --slurm-gpus-per-node N)")
    jobs.add_argument("--slurm-cpus-per-task", dest="slurm_cpus_per_task", type=int, default=8,
                      help="CPU cores per process (default 8)")
    jobs.add_argument("--slurm-mem", dest="slurm_mem", help="memory per job, e.g. 64G (default: the partition's)")
    jobs.add_argument("--slurm-timeout", dest="slurm_timeout", type=int, default=24 * 60,
                      help="time limit per job in minutes (default 1440); a job reaching it is requeued and resumes")
    jobs.add_argument("--slurm-array-parallelism", dest="slurm_array_parallelism", type=int, default=5,
                      help="array tasks running at once (default 5)")
    jobs.add_argument("--slurm-setup", dest="slurm_setup", action="append", metavar="LINE",
                      help="shell line run before each job, e.g. 'module load cuda/12.4' (repeatable)")
    if recipe_flags:  # importing recipes (torch, MONAI) only when `cv` is the command, and only the one asked for
        chosen = [recipe_flags] if isinstance(recipe_flags, str) and recipe_flags in recipe_registry.names() \
            else recipe_registry.names()
        cv.set_defaults(_recipe_flags={n: recipe_registry.get(n).add_arguments(cv) for n in chosen})
    add_common(cv)
    cv.set_defaults(func=cmd_cv)
