"""``scribmed pseudolabel``: SAM pseudo labels from scribbles, and ``--shard`` embedding jobs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scribmed.cli.options import (
    LAYOUT_NAMES,
    add_common,
    open_from_args,
    spacing_mm,
)
from scribmed.data.errors import DataError
from scribmed.sam.stage_options import add_sam_stage_arguments


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


def _rounds_config(args: argparse.Namespace):  # -> RoundsConfig
    """The rounds of the parsed ``--sam-*`` flags and ``--negatives`` (as ``scribmed cv``'s SAM stage runs them)."""
    import dataclasses

    from scribmed.sam.pseudo_labels import PromptConfig
    from scribmed.sam.stage_config import RoundsConfig
    from scribmed.sam.stage_options import sam_stage_from_args

    try:
        stage = sam_stage_from_args(args)
    except ValueError as exc:
        raise DataError(None, str(exc))
    config = RoundsConfig.from_stage(stage, progress=not args.quiet)
    if args.negatives != "auto":  # auto: none for zero-shot, neighbour after fine-tuning
        config.zero_shot_prompts = dataclasses.replace(config.zero_shot_prompts, negatives=args.negatives)
        if config.finetune_config is not None:
            config.finetune_config = dataclasses.replace(config.finetune_config, negatives=args.negatives)
    negatives = config.finetune_config.negatives if config.finetune_config is not None else "neighbour"
    config.finetuned_prompts = PromptConfig(n_points=stage.n_points, negatives=negatives)
    return config


def cmd_pseudolabel(args: argparse.Namespace) -> int:
    from scribmed.sam.quality import format_quality_table
    from scribmed.sam.rounds import run_pseudo_label_rounds

    if (args.split is None) != (args.fold is None):
        raise DataError(args.split, "--split and --fold go together (fold is 1-based)")
    config = _rounds_config(args)
    dataset = open_from_args(args)
    train = val = None
    if args.split is not None:
        from scribmed.data.split_files import load_split
        from scribmed.data.splits import validate_split

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
        stats = encode_shard(config.backend, cases, config.cache_dir or Path(args.out) / "embeddings", args.shard,
                             progress=not args.quiet, checkpoint=config.checkpoint, device=config.device,
                             encoder_runtime=config.encoder_runtime, backend_options={"amp": config.amp})
        print(json.dumps(stats))
        print("embeddings cached for this shard; when every shard is done, run the same command without --shard")
        return 0
    result = run_pseudo_label_rounds(dataset, args.out, config, train_patients=train, val_patients=val,
                                     progress=not args.quiet)
    names = [dataset.class_map.names[k] for k in dataset.class_map.foreground]
    if result.quality["rounds"]:
        print("pseudo-label Dice against ground truth (pooled over all slices):")
        print(format_quality_table(result.quality, names))
    else:
        print("no case has ground truth: no quality table")
    print(f"pseudo labels: {result.round_dirs[-1]}")
    print(f"quality: {Path(args.out) / 'quality.json'}")
    return 0


def add_parser(sub: Any, recipe_flags: bool = True) -> None:
    """Register the command(s) on the ``scribmed`` subparsers."""
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
    pl.add_argument("--layout", required=True, choices=LAYOUT_NAMES, help="on-disk layout of --root")
    pl.add_argument("--root", required=True, type=Path, help="dataset folder as distributed")
    pl.add_argument("--out", required=True, type=Path, help="run folder (pseudo labels, quality.json)")
    pl.add_argument("--split", help="split JSON path or a shipped split's name (e.g. acdc_5fold): the fold's "
                    "train patients get pseudo labels and "
                    "fine-tune the decoder, its val patients select it")
    pl.add_argument("--fold", type=int, help="fold of --split (1-based)")
    pl.add_argument("--patients", type=_patient_list, help="comma-separated patient ids: restrict the "
                    "pseudo-labelled (training) patients to these")
    pl.add_argument("--negatives", choices=("auto", "none", "neighbour", "background"), default="auto",
                    help="negative points: auto (default) = none for zero-shot, neighbour after fine-tuning; "
                    "an explicit value applies to every round")
    pl.add_argument("--shard", type=_shard, metavar="I/N",
                    help="only encode the I-th of N shares of the cases into the embedding cache (--sam-cache, shared "
                    "by N jobs at once) and stop; then run without --shard for the rounds")
    pl.add_argument("--spacing", type=spacing_mm, help="dz,dy,dx in mm for layouts that store none")
    pl.add_argument("--allow-missing", action="store_true", help="drop split patients absent from the dataset")
    add_sam_stage_arguments(pl, title="SAM (the same flags as scribmed cv's SAM stage)")
    add_common(pl, figures=False)
    pl.set_defaults(func=cmd_pseudolabel)
