"""The ``scribmed`` command line (also ``python -m scribmed``).

Verbs read like what a researcher does: ``data check``, ``phantom``, ``weak make``, ``evaluate``, ``demo``.
Bad input ends with a one-line ``error: <file>: <problem>`` on stderr and exit status 1; results go
to stdout (JSON) or into the ``--out`` run directory, never into the dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from scribmed.data.errors import DataError
from scribmed.data.layouts import LAYOUTS

LAYOUT_NAMES = tuple(LAYOUTS)  # from the registry: a new layout needs no CLI edit
#: flags of ``scribmed cv`` that every training recipe's config takes (a recipe without them refuses them)
TRAINING_FLAGS = ("iterations", "batch_size", "size", "device", "seed", "val_interval", "lr_horizon", "image_interp",
                  "upsample", "channels_last", "amp")
AMP_CHOICES = ("auto", "bf16", "fp16", "off")  # scribmed.engine.device.AMP_MODES (no torch import to build the parser)


def _key_value(text: str) -> dict[str, object]:
    """``KEY=VALUE`` with VALUE parsed as JSON when it is JSON (numbers, true/false, lists), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    try:
        parsed: object = json.loads(value)
    except ValueError:
        parsed = value
    return {key.strip().replace("-", "_"): parsed}


class _MergeSet(argparse.Action):
    """Collects repeated ``--set KEY=VALUE`` into one dict."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        merged = dict(getattr(namespace, self.dest) or {})
        merged.update(values)
        setattr(namespace, self.dest, merged)


def _spacing(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"spacing must be comma-separated numbers (mm), got {text!r}")
    if len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"spacing must be three positive numbers dz,dy,dx in mm, got {text!r}")
    return values


def _open(args: argparse.Namespace):
    from scribmed.data.layouts import open_dataset

    options = {}
    if getattr(args, "spacing", None) is not None:
        options["spacing"] = args.spacing
    return open_dataset(args.layout, args.root, **options)


# --- data check ---------------------------------------------------------------------------------


def cmd_data_check(args: argparse.Namespace) -> int:
    dataset = _open(args)
    dataset.validate(progress=not args.quiet)
    summary = dataset.summary()
    if args.split is not None:
        from scribmed.data.splits import load_split, validate_split

        split = load_split(args.split)
        report = validate_split(split, dataset, allow_missing=args.allow_missing)
        summary["split"] = {"file": str(args.split), "name": split.name, "folds": len(split.folds)}
        dropped = getattr(report, "missing", None) if report is not None else None
        if dropped:
            summary["split"]["missing_patients_dropped"] = list(dropped)
    print(json.dumps(summary, indent=2))
    return 0


# --- phantom ------------------------------------------------------------------------------------


def cmd_phantom(args: argparse.Namespace) -> int:
    from scribmed.data.phantoms import write_phantom_dataset

    root = write_phantom_dataset(args.kind, args.layout, args.out, n_patients=args.patients, seed=args.seed)
    print(json.dumps({"root": str(root), "layout": args.layout, "kind": args.kind, "patients": args.patients}))
    return 0


# --- weak make ----------------------------------------------------------------------------------


def _mix(text: str) -> dict[str, float]:
    from scribmed.data.weak_conversion import parse_mix

    try:
        return parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _jitter(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"box jitter must be LO,HI pixels like 3,7, got {text!r}")
    if not 0 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"box jitter must satisfy 0 <= LO <= HI, got {text!r}")
    return lo, hi


def cmd_weak_make(args: argparse.Namespace) -> int:
    from scribmed.data.weak_conversion import make_weak_dataset
    from scribmed.data.weak_labels import SUPERVISION_TYPES, read_supervision

    dataset = _open(args)
    out = make_weak_dataset(
        dataset, args.out, args.mix, args.seed, point_mode=args.point_mode, points_per_class=args.points_per_class,
        point_negatives=args.point_negatives, box_jitter=args.box_jitter, scribbles=args.scribbles,
        progress=not args.quiet,
    )
    kinds = list(read_supervision(out / "supervision.json").values())
    print(json.dumps({"out": str(out), "cases": len(kinds), "patients": len(dataset.patients),
                      "counts": {t: kinds.count(t) for t in SUPERVISION_TYPES}, "seed": args.seed}, indent=2))
    return 0


# --- evaluate -----------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    from scribmed.evaluation.folder import evaluate_folder

    summary_path = evaluate_folder(
        pred_dir=args.pred,
        ref_root=args.ref,
        layout=args.layout,
        out_dir=args.out,
        hd95_mode=args.hd95,
        empty_policy=args.empty,
        spacing=args.spacing,
        allow_missing=args.allow_missing,
        progress=not args.quiet,
    )
    print(f"report: {summary_path.parent}")
    return 0


# --- cv ---------------------------------------------------------------------------------------


def _fold_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"folds must be comma-separated numbers like 1,3, got {text!r}")


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
    dataset = _open(args)
    supervision = _apply_supervision(args, dataset)
    own = set(getattr(args, "_recipe_flags", {}).get(args.recipe, ()))
    foreign = [
        f"--{dest.replace('_', '-')} (--recipe {owner})"
        for owner, dests in getattr(args, "_recipe_flags", {}).items() if owner != args.recipe
        for dest in dests if dest not in own and getattr(args, dest, None) is not None
    ]
    if foreign:
        raise DataError(None, f"{', '.join(foreign)} do not apply to --recipe {args.recipe}")
    overrides = {k: getattr(args, k) for k in (*TRAINING_FLAGS, *own) if getattr(args, k, None) is not None}
    overrides.update(args.set or {})
    return cls.from_options(**overrides), dataset, supervision


def _requested_folds(args: argparse.Namespace) -> Optional[list[int]]:
    return [args.fold] if args.fold is not None else args.folds


def _run_cv(args: argparse.Namespace) -> Optional[Path]:
    """The folds of ``args`` in this process (all ranks of it under torchrun); the summary path when merged."""
    from scribmed.engine import distributed as dist_utils
    from scribmed.engine.cross_validation import run_cross_validation

    under_torchrun = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    if under_torchrun:
        dist_utils.init_distributed(args.device or "auto")
    try:
        recipe, dataset, supervision = _cv_setup(args)
        return run_cross_validation(
            recipe, dataset, args.split, args.out, folds=_requested_folds(args), allow_missing=args.allow_missing,
            progress=not args.quiet and dist_utils.is_main_process(), merge=not args.no_merge,
            supervision=supervision, stage=args.stage,
        )
    finally:
        if under_torchrun:
            dist_utils.cleanup_distributed()


def _cv_job(args: argparse.Namespace, fold: int, stage: str) -> None:
    """One job of ``scribmed cv --executor ...``: the same command line, restricted to ``fold`` and ``stage``."""
    job = argparse.Namespace(**vars(args))
    job.fold, job.folds, job.executor, job.no_merge = int(fold), None, "sequential", True
    job.stage = "prepare" if stage == "prepare" else "all"
    _run_cv(job)


def _submit_cv(args: argparse.Namespace) -> int:
    """``scribmed cv --executor local|slurm``: check the run, plan its jobs, run (local) or submit (slurm) them."""
    import functools

    from scribmed.engine.cross_validation import merge_folds, open_run
    from scribmed.engine.executors import (
        SlurmOptions,
        plan_jobs,
        require_submitit,
        run_local,
        submit_slurm,
    )
    from scribmed.engine.fold_jobs import FoldJob
    from scribmed.engine.fold_status import active_folds, fold_states, format_status

    require_submitit()
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise DataError(None, "--executor starts its own jobs; run it without torchrun (--slurm-tasks-per-node N "
                        "trains each fold with DDP on the cluster)")
    recipe, dataset, supervision = _cv_setup(args)
    run = open_run(recipe, dataset, args.split, args.out, allow_missing=args.allow_missing, supervision=supervision)
    folds = run.folds(_requested_folds(args))
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

    def make_job(fold: int, stage: str) -> FoldJob:
        return FoldJob(run_one, run.out, fold, stage, merge_folds=merge, tasks=tasks)

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
    from scribmed.engine.cross_validation import merge_folds

    if args.action:
        if args.action[0] == "compare" and len(args.action) >= 2:
            from scribmed.evaluation.comparison import compare_runs

            print(compare_runs([Path(a) for a in args.action[1:]], args.out), end="")
            if args.out is not None:
                print(f"table: {args.out}")
            return 0
        if args.action[0] == "status" and len(args.action) == 2:
            from scribmed.engine.fold_status import fold_states, format_status

            print(format_status(fold_states(Path(args.action[1]))), end="")
            return 0
        if args.action[0] != "merge" or len(args.action) != 2:
            raise DataError(
                None, f"unknown cv action {' '.join(args.action)!r}; use 'scribmed cv merge DIR', "
                "'scribmed cv status DIR' or 'scribmed cv compare DIR DIR ...'"
            )
        summary = merge_folds(Path(args.action[1]))
        print((summary.parent / "summary.md").read_text())
        print(f"summary: {summary}")
        return 0
    if args.executor != "sequential":
        return _submit_cv(args)
    summary = _run_cv(args)
    if summary is not None:
        print((summary.parent / "summary.md").read_text())
        print(f"summary: {summary}")
    return 0


# --- predict ------------------------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    from scribmed.predict import predict_folder

    paths = predict_folder(args.checkpoint, args.input, args.layout, args.out, device=args.device,
                           spacing=args.spacing, progress=not args.quiet)
    print(json.dumps({"predictions": str(args.out), "cases": len(paths)}))
    return 0


# --- bundle -------------------------------------------------------------------------------------


def cmd_bundle(args: argparse.Namespace) -> int:
    from scribmed.bundles.export import describe_bundles, export_bundle

    if args.bundle_command == "list":
        for row in describe_bundles():
            print(f"{row['name']:<14} {row['version']:<8} {row['description']}")
        return 0
    dest = export_bundle(args.name, args.dir)
    print(f"exported {args.name} to {dest}; run it with:")
    print(f"  python -m monai.bundle run --config_file {dest}/configs/train.yaml "
          f"--meta_file {dest}/configs/metadata.json --bundle_root {dest} --dataset_dir /path/to/data --fold 1")
    return 0


# --- demo ---------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from scribmed.demo import run_demo

    report = run_demo(
        out=args.out, patients=args.patients, seed=args.seed, iterations=args.iterations,
        size=args.size, batch_size=args.batch_size, recipes=args.recipes, rounds=args.rounds,
        sam_epochs=args.sam_epochs, folds=args.folds, progress=not args.quiet,
    )  # fmt: skip
    print(f"demo report: {report}")
    return 0


# --- pseudolabel ------------------------------------------------------------------------------


def _patient_list(text: str) -> list[str]:
    ids = [v.strip() for v in text.split(",") if v.strip()]
    if not ids:
        raise argparse.ArgumentTypeError(f"patients must be comma-separated ids like patient001,patient002, got {text!r}")
    return ids


def _shard(text: str) -> tuple[int, int]:
    from scribmed.sam.embedding_shards import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def cmd_pseudolabel(args: argparse.Namespace) -> int:
    import dataclasses

    from scribmed.sam.pseudo_labels import ZERO_SHOT_PROMPTS, PromptConfig
    from scribmed.sam.quality import format_quality_table
    from scribmed.sam.rounds import run_pseudo_label_rounds

    if args.rounds < 0:
        raise DataError(None, f"--rounds must be >= 0, got {args.rounds}")
    if args.n_points < 1:
        raise DataError(None, f"--n-points must be >= 1, got {args.n_points}")
    if (args.split is None) != (args.fold is None):
        raise DataError(args.split, "--split and --fold go together (fold is 1-based)")
    dataset = _open(args)
    train = val = None
    if args.split is not None:
        from scribmed.data.splits import load_split, validate_split

        split = validate_split(load_split(args.split), dataset, allow_missing=args.allow_missing).split
        fold = split.fold(args.fold - 1)
        train, val = list(fold.train), list(fold.val)
    if args.patients is not None:
        unknown = [p for p in args.patients if p not in set(dataset.patients)]
        if unknown:
            raise DataError(args.root, f"--patients not in the dataset: {', '.join(unknown[:10])}")
        wanted = set(args.patients)
        train = [p for p in (train if train is not None else dataset.patients) if p in wanted]
        if not train:
            raise DataError(args.split, "--patients leaves no training patient of the fold")
    if args.shard is not None:  # one of N jobs filling the shared embedding cache; the rounds come later
        from scribmed.sam.embedding_shards import encode_shard

        patients = set(train if train is not None else dataset.patients) | set(val or ())
        cases = dataset.cases_of(sorted(patients))
        stats = encode_shard(args.backend, cases, args.cache or Path(args.out) / "embeddings", args.shard,
                             progress=not args.quiet, checkpoint=args.checkpoint, device=args.device,
                             encoder_runtime=args.encoder_runtime,
                             backend_options={"amp": "auto" if args.amp is None else args.amp})
        print(json.dumps(stats))
        print("embeddings cached for this shard; when every shard is done, run the same command without --shard")
        return 0
    zero_shot = dataclasses.replace(ZERO_SHOT_PROMPTS, n_points=args.n_points,
                                    negatives="none" if args.negatives == "auto" else args.negatives)
    finetuned = PromptConfig(n_points=args.n_points,
                             negatives="neighbour" if args.negatives == "auto" else args.negatives)
    finetune = None
    if args.rounds > 0:
        from scribmed.sam.decoder_finetune import FinetuneConfig

        finetune = FinetuneConfig(epochs=args.epochs, lr=args.lr, n_points=args.n_points,
                                  negatives=finetuned.negatives, loss_resolution=args.loss_resolution,
                                  progress=not args.quiet)
    result = run_pseudo_label_rounds(
        args.backend, dataset, args.out, rounds=args.rounds, train_patients=train, val_patients=val,
        zero_shot_prompts=zero_shot, finetuned_prompts=finetuned, finetune_config=finetune,
        checkpoint=args.checkpoint, device=args.device, cache_dir=args.cache, progress=not args.quiet,
        encoder_runtime=args.encoder_runtime, amp=args.amp,
    )
    names = [dataset.class_map.names[k] for k in dataset.class_map.foreground]
    if result.quality["rounds"]:
        print("pseudo-label Dice against ground truth (pooled over all slices):")
        print(format_quality_table(result.quality, names))
    else:
        print("no case has ground truth: no quality table")
    print(f"pseudo labels: {result.round_dirs[-1]}")
    print(f"quality: {Path(args.out) / 'quality.json'}")
    return 0


# --- parser -------------------------------------------------------------------------------------


def build_parser(recipe_flags: bool = True) -> argparse.ArgumentParser:
    """The ``scribmed`` parser; ``recipe_flags=False`` leaves out the recipes' own ``cv`` flags (faster start)."""
    parser = argparse.ArgumentParser(
        prog="scribmed",
        description="Scribble-supervised medical image segmentation: data checks, phantoms, evaluation, recipes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add_common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    # data check
    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data_sub.required = True
    check = data_sub.add_parser(
        "check",
        help="validate a dataset (and optionally a split) and print a JSON summary",
        description="Load every case once, check files, shapes, spacing, class values and intensities, "
        "and print a JSON summary. Exit 1 with a one-line reason on bad data.",
    )
    check.add_argument("--layout", required=True, choices=LAYOUT_NAMES, help="on-disk layout of --root")
    check.add_argument("--root", required=True, type=Path, help="dataset folder as distributed")
    check.add_argument("--split", help="split JSON path, or the name of a shipped split (e.g. acdc_5fold)")
    check.add_argument(
        "--allow-missing", action="store_true", help="restrict the split to present patients instead of failing"
    )
    check.add_argument("--spacing", type=_spacing, help="dz,dy,dx in mm for layouts that store none")
    add_common(check)
    check.set_defaults(func=cmd_data_check)

    # phantom
    ph = sub.add_parser(
        "phantom",
        help="generate a synthetic dataset with ground truth and scribbles",
        description="Write a phantom dataset (cardiac ACDC-like or abdominal CHAOS-like) in any supported layout.",
    )
    ph.add_argument("--kind", required=True, choices=("cardiac", "abdominal"))
    ph.add_argument("--layout", required=True, choices=LAYOUT_NAMES)
    ph.add_argument("--out", required=True, type=Path, help="output folder (created; must not hold other data)")
    ph.add_argument("--patients", type=int, default=10)
    ph.add_argument("--seed", type=int, default=0)
    ph.set_defaults(func=cmd_phantom)

    # weak make
    weak = sub.add_parser("weak", help="weak labels (boxes, points, scribbles) simulated from full labels")
    weak_sub = weak.add_subparsers(dest="weak_command", metavar="SUBCOMMAND")
    weak_sub.required = True
    wm = weak_sub.add_parser(
        "make",
        help="write a generic-layout copy of a labelled dataset with a seeded mix of supervision types",
        description="Give each patient a supervision type (full, box, point, scribble, none) by --mix, convert its "
        "full labels into boxes / points / scribbles, and write a new generic dataset in --out: images, the full "
        "labels (kept as the evaluation reference), weak/<case>.json, scribblesTr/, supervision.json and "
        "dataset.json with the provenance. The source is only read. Prints a JSON summary.",
    )
    wm.add_argument("--layout", required=True, choices=LAYOUT_NAMES, help="on-disk layout of --root")
    wm.add_argument("--root", required=True, type=Path, help="labelled source dataset folder")
    wm.add_argument("--mix", required=True, type=_mix, help="shares per type summing to 1, e.g. "
                    "full=0.1,box=0.3,point=0.3,scribble=0.3 (types: full, box, point, scribble, none)")
    wm.add_argument("--seed", type=int, default=0, help="seed of the assignment and the converters (default 0)")
    wm.add_argument("--out", required=True, type=Path, help="new (or empty) folder for the generic dataset")
    wm.add_argument("--points-per-class", dest="points_per_class", type=int, default=5,
                    help="positive points per class per slice (default 5; skeleton mode: per instance)")
    wm.add_argument("--point-mode", dest="point_mode", default="center",
                    choices=("center", "random", "boundary", "skeleton"), help="point sampler (default center)")
    wm.add_argument("--point-negatives", dest="point_negatives", type=int, default=0,
                    help="negative points per class per slice (default 0)")
    wm.add_argument("--box-jitter", dest="box_jitter", type=_jitter, default=(3, 7),
                    help="per-side box shift range LO,HI in pixels (default 3,7, MedSAM)")
    wm.add_argument("--scribbles", choices=("auto", "synthetic", "source"), default="auto",
                    help="scribble cases: the source's own scribbles when present, else synthesised (auto, default)")
    wm.add_argument("--spacing", type=_spacing, help="dz,dy,dx in mm for layouts that store none")
    add_common(wm)
    wm.set_defaults(func=cmd_weak_make)

    # evaluate
    ev = sub.add_parser(
        "evaluate",
        help="Dice / HD95 / ASD of a folder of predictions against a dataset's labels",
        description="Predictions are NIfTI files named <case_id>.nii.gz. Writes per_case.csv, summary.json, "
        "summary.md and a box plot into --out.",
    )
    ev.add_argument("--pred", required=True, type=Path, help="folder of <case_id>.nii.gz predictions")
    ev.add_argument(
        "--ref", required=True, type=Path, help="dataset root read with --layout (generic: or a folder of labels)"
    )
    ev.add_argument("--layout", required=True, choices=LAYOUT_NAMES)
    ev.add_argument("--out", required=True, type=Path, help="report folder")
    ev.add_argument("--hd95", choices=("medpy", "monai"), default="medpy", help="HD95 convention (default medpy)")
    ev.add_argument("--empty", default=None, help="empty-mask policy (see docs/metrics.md); default: the library's")
    ev.add_argument("--spacing", type=_spacing, help="dz,dy,dx in mm for layouts that store none")
    ev.add_argument("--allow-missing", action="store_true", help="skip reference cases without a prediction")
    add_common(ev)
    ev.set_defaults(func=cmd_evaluate)

    # cv
    cv = sub.add_parser(
        "cv",
        help="k-fold cross-validation of a recipe (or 'cv merge DIR' to merge finished folds)",
        description="Train each fold on its training patients, select the checkpoint on its validation "
        "patients, predict and evaluate its test patients, and write fold_k/ folders plus summary.json, "
        "summary.md and plots into --out. Finished folds are skipped on a rerun; unfinished ones resume. "
        "'scribmed cv merge DIR' merges folds computed elsewhere (e.g. one --fold per node).",
    )
    cv.add_argument("action", nargs="*", help="'merge DIR' to merge finished folds of DIR; 'status DIR' for each "
                    "fold's state; 'compare DIR DIR ...' for a side-by-side table of runs on the same cases "
                    "(--out FILE.md to save it)")
    from scribmed import recipes as recipe_registry

    cv.add_argument("--recipe", choices=recipe_registry.names(), help="method to train (scribmed.recipes)")
    cv.add_argument("--layout", choices=LAYOUT_NAMES)
    cv.add_argument("--root", type=Path, help="dataset folder as distributed")
    cv.add_argument("--split", default="auto", help="split JSON, or 'auto' (seeded 5-fold by patient, saved in --out)")
    cv.add_argument("--out", type=Path, help="run directory")
    cv.add_argument("--folds", type=_fold_list, help="1-based folds to run, e.g. 1,3 (default all)")
    cv.add_argument("--fold", type=int, help="run this single fold (1-based); merge later with 'cv merge'")
    cv.add_argument("--iterations", type=int, help="training iterations per fold (paper: 60000)")
    cv.add_argument("--batch-size", dest="batch_size", type=int, help="slices per iteration (paper: 12)")
    cv.add_argument("--size", type=int, help="network input side in pixels (paper: 256)")
    cv.add_argument("--val-interval", dest="val_interval", type=int, help="iterations between validations/checkpoints")
    cv.add_argument("--lr-horizon", dest="lr_horizon", type=int,
                    help="iterations over which the poly learning rate decays to 0 (default: --iterations; "
                    "60000 follows the paper's schedule in a short run, as the reference code does)")
    cv.add_argument("--image-interp", dest="image_interp", choices=("bilinear", "nearest"),
                    help="image resizing to the network size for training and inference (default bilinear; "
                    "the reference code uses nearest)")
    cv.add_argument("--upsample", choices=("transpose", "bilinear"),
                    help="U-Net decoder up-steps: transpose (2x2 transposed conv, the paper) or bilinear "
                    "(1x1 conv + bilinear, what the reference code runs)")
    cv.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=None,
                    help="NHWC memory format (DMPLS default: 1.29x faster on a CPU; --no-channels-last: NCHW, "
                    "another reproducible dropout draw; SAM-SP's segmentor defaults to NCHW)")
    cv.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    cv.add_argument("--amp", choices=AMP_CHOICES,
                    help="segmentor mixed precision on CUDA: auto (default: bf16 where the GPU has it, else fp16 with "
                    "a gradient scaler), bf16, fp16, off; always off on a CPU (SAM stage: --sam-amp)")
    cv.add_argument("--seed", type=int, help="training seed")
    cv.add_argument("--spacing", type=_spacing, help="dz,dy,dx in mm for layouts that store none")
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
    cv.add_argument("--set", dest="set", action=_MergeSet, type=_key_value, metavar="KEY=VALUE",
                    help="override any field of the recipe's config (repeatable), e.g. --set lam=0.3")
    cv.add_argument("--stage", choices=("all", "prepare"), default="all",
                    help="all (default), or prepare: only the recipe's stage before training (SAM pseudo labels), "
                    "e.g. as its own job")
    jobs = cv.add_argument_group("folds as jobs (submitit; see docs/cluster.md)")
    jobs.add_argument("--executor", choices=("sequential", "local", "slurm"), default="sequential",
                      help="sequential (default: folds one after another in this process), local (each fold and its "
                      "SAM stage a job on this machine, --workers at once, one GPU each) or slurm (job arrays)")
    jobs.add_argument("--workers", type=int, default=1, help="local executor: jobs at once (default 1)")
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
    if recipe_flags:  # importing every recipe (torch, MONAI) only when `cv` is the command
        cv.set_defaults(_recipe_flags={n: recipe_registry.get(n).add_arguments(cv) for n in recipe_registry.names()})
    add_common(cv)
    cv.set_defaults(func=cmd_cv)

    # bundle
    bu = sub.add_parser("bundle", help="list the shipped MONAI bundles or export one into a folder of yours")
    bu_sub = bu.add_subparsers(dest="bundle_command", metavar="SUBCOMMAND")
    bu_sub.required = True
    bu_sub.add_parser("list", help="name, version and title of every shipped bundle").set_defaults(func=cmd_bundle)
    ex = bu_sub.add_parser("export", help="copy a shipped bundle into DIR (then: monai.bundle run --bundle_root DIR)")
    ex.add_argument("name", help="bundle name (see 'scribmed bundle list')")
    ex.add_argument("dir", type=Path, help="new (or empty) folder to copy it into")
    ex.set_defaults(func=cmd_bundle)

    # predict
    pr = sub.add_parser(
        "predict",
        help="apply a trained checkpoint to images without labels (NIfTI on each image's grid)",
        description="Load a scribmed checkpoint (e.g. RUN/fold_1/train/best.pt; its recipe, config and class map "
        "are read from it), predict every case of --input read with --layout, and write OUT/<case_id>.nii.gz "
        "on each image's own grid. An input whose channel count or class map does not fit the checkpoint is "
        "refused. Existing outputs are kept (a killed run resumes).",
    )
    pr.add_argument("--checkpoint", required=True, type=Path, help="a scribmed training checkpoint (.pt)")
    pr.add_argument("--input", required=True, type=Path, help="dataset folder read with --layout (labels not needed)")
    pr.add_argument("--layout", required=True, choices=LAYOUT_NAMES)
    pr.add_argument("--out", required=True, type=Path, help="output folder for <case_id>.nii.gz")
    pr.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1")
    pr.add_argument("--spacing", type=_spacing, help="dz,dy,dx in mm for layouts that store none")
    add_common(pr)
    pr.set_defaults(func=cmd_predict)

    # demo
    demo = sub.add_parser(
        "demo",
        help="end-to-end run on a generated phantom dataset",
        description="Generate a phantom ACDC-like dataset, run a short three-fold cross-validation of SAM-SP "
        "(LiteMedSAM pseudo-label rounds + aligned segmentor) and DMPLS on it, compare with the nearest-scribble "
        "baseline, print the table and where the report is. Under 10 minutes on 2 CPU cores.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.add_argument("--patients", type=int, default=9)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--iterations", type=int, default=300, help="segmentor iterations per fold (every recipe)")
    demo.add_argument("--folds", type=int, default=3, help="cross-validation folds by patient (default 3)")
    demo.add_argument("--recipes", type=lambda t: [v.strip() for v in t.split(",") if v.strip()],
                      default=["samsp", "dmpls"], help="comma-separated recipes to compare (default samsp,dmpls)")
    demo.add_argument("--rounds", type=int, default=1, help="SAM-SP decoder fine-tuning rounds (default 1)")
    demo.add_argument("--sam-epochs", dest="sam_epochs", type=int, default=1, help="fine-tuning epochs per round")
    demo.add_argument("--size", type=int, default=64, help="network input side (pixels)")
    demo.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    add_common(demo)
    demo.set_defaults(func=cmd_demo)

    # pseudolabel
    pl = sub.add_parser(
        "pseudolabel",
        help="SAM pseudo labels from scribbles (zero-shot + decoder fine-tuning rounds) with a quality report",
        description="Prompt SAM with each case's scribbles (points along each class scribble, all classes of a "
        "slice in one decoder call), merge the class masks (cardiac: LV > RV > Myo) and write "
        "OUT/round_r/<case_id>.nii.gz plus confidence maps. Round 0 is zero-shot; each further round "
        "fine-tunes the mask decoder on the training patients' scribbles + the previous pseudo labels, "
        "selects it on the validation patients and regenerates. OUT/quality.json holds the per-class "
        "Dice of every round on the cases with ground truth. Image embeddings are cached (the encoder "
        "runs once per slice); finished rounds are skipped on a rerun.",
    )
    # sam_backends.BACKENDS, spelled out so that building the parser imports no torch (a test checks they agree)
    pl.add_argument("--backend", default="lite_medsam",
                    choices=("lite_medsam", "vit_h", "vit_l", "vit_b", "medsam_vit_b",
                             "sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l",
                             "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"),
                    help="SAM backend (default lite_medsam, weights included; others need --checkpoint; sam2* need "
                    "the sam2 package)")
    pl.add_argument("--layout", required=True, choices=LAYOUT_NAMES, help="on-disk layout of --root")
    pl.add_argument("--root", required=True, type=Path, help="dataset folder as distributed")
    pl.add_argument("--out", required=True, type=Path, help="run folder (pseudo labels, quality.json)")
    pl.add_argument("--split", type=Path, help="split JSON: the fold's train patients get pseudo labels and "
                    "fine-tune the decoder, its val patients select it")
    pl.add_argument("--fold", type=int, help="fold of --split (1-based)")
    pl.add_argument("--patients", type=_patient_list, help="comma-separated patient ids: restrict the "
                    "pseudo-labelled (training) patients to these")
    pl.add_argument("--rounds", type=int, default=2, help="fine-tuning rounds after zero-shot (default 2, "
                    "SAM-SP; 0 = zero-shot only)")
    pl.add_argument("--checkpoint", type=Path, help="SAM weights (.pth, loaded weights_only)")
    pl.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1")
    pl.add_argument("--n-points", dest="n_points", type=int, default=10, help="points per class (default 10)")
    pl.add_argument("--negatives", choices=("auto", "none", "neighbour", "background"), default="auto",
                    help="negative points: auto (default) = none for zero-shot, neighbour after fine-tuning; "
                    "an explicit value applies to every round")
    pl.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per round (default 2)")
    pl.add_argument("--lr", type=float, default=5e-5, help="decoder AdamW learning rate (default 5e-5)")
    pl.add_argument("--cache", type=Path, help="embedding cache folder to share across runs (default OUT/embeddings)")
    pl.add_argument("--encoder-runtime", dest="encoder_runtime", default="auto",
                    choices=("auto", "torch", "openvino", "onnxruntime"),
                    help="runtime of SAM's image encoder: auto (default: OpenVINO on the CPU when installed), torch, "
                    "openvino, onnxruntime")
    pl.add_argument("--loss-resolution", dest="loss_resolution", default="low", choices=("low", "full"),
                    help="decoder fine-tuning loss on the decoder's 256x256 logits (low, default) or on the slice (full)")
    pl.add_argument("--amp", choices=AMP_CHOICES, help="SAM mixed precision on CUDA (encoder and decoder fine-tuning): "
                    "auto (default: bf16 where the GPU has it, else fp16), bf16, fp16, off; off on a CPU")
    pl.add_argument("--shard", type=_shard, metavar="I/N",
                    help="only encode the I-th of N shares of the cases into the embedding cache (--cache, shared "
                    "by N jobs at once) and stop; then run without --shard for the rounds")
    pl.add_argument("--spacing", type=_spacing, help="dz,dy,dx in mm for layouts that store none")
    pl.add_argument("--allow-missing", action="store_true", help="drop split patients absent from the dataset")
    add_common(pl)
    pl.set_defaults(func=cmd_pseudolabel)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(recipe_flags=bool(argv) and argv[0] == "cv")
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (DataError, ValueError) as err:
        if os.environ.get("SCRIBMED_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted (outputs written so far are complete; rerun to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
