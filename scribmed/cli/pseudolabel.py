"""``scribmed pseudolabel``: SAM pseudo labels from scribbles, and ``--shard`` embedding jobs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scribmed.cli.options import (
    AMP_CHOICES,
    LAYOUT_NAMES,
    add_common,
    open_from_args,
    spacing_mm,
)
from scribmed.data.errors import DataError


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
    from scribmed.sam.stage_config import RoundsConfig

    if args.rounds < 0:
        raise DataError(None, f"--rounds must be >= 0, got {args.rounds}")
    if args.n_points < 1:
        raise DataError(None, f"--n-points must be >= 1, got {args.n_points}")
    if (args.split is None) != (args.fold is None):
        raise DataError(args.split, "--split and --fold go together (fold is 1-based)")
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
        from scribmed.sam.finetune_config import FinetuneConfig

        finetune = FinetuneConfig(epochs=args.epochs, lr=args.lr, n_points=args.n_points,
                                  negatives=finetuned.negatives, loss_resolution=args.loss_resolution,
                                  progress=not args.quiet)
    config = RoundsConfig(
        backend=args.backend, checkpoint=args.checkpoint, rounds=args.rounds, device=args.device, cache_dir=args.cache,
        encoder_runtime=args.encoder_runtime, amp=args.amp, zero_shot_prompts=zero_shot, finetuned_prompts=finetuned,
        finetune_config=finetune,
    )
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
    pl.add_argument("--spacing", type=spacing_mm, help="dz,dy,dx in mm for layouts that store none")
    pl.add_argument("--allow-missing", action="store_true", help="drop split patients absent from the dataset")
    add_common(pl)
    pl.set_defaults(func=cmd_pseudolabel)
