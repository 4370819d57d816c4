"""Quality of LiteMedSAM pseudo labels on real ACDC: zero-shot prompts, then decoder fine-tuning rounds.

Data: ``ACDC/`` (``acdc-h5``) and, for ``--point-ablation``, ``CHAOS_T2/`` (``chaos-t2-nifti``;
ACDC alone without it) in the data folder, ``--data-root DIR`` or ``$SCRIBMED_DATA``.

Zero-shot part (always): for the held-out patients (default 001-003, both frames), pseudo labels
from 10 points per class along the scribble skeleton in the prompt variants of :data:`VARIANTS` (single mask or SAM's best of three
candidates by predicted IoU; with or without neighbour negatives; with or without the scribble's
bounding box), marking scribmed's default (:data:`~scribmed.sam.pseudo_labels.ZERO_SHOT_PROMPTS`)
and checking it against the reference zero-shot row (:data:`REFERENCE_ZERO_SHOT`). Geometries:

* ``aspect``: scribmed's backend (longest side resized to 256, aspect kept, zero-padded), Dice at
  the native resolution;
* ``square``: every slice first resized to 256x256 (bilinear image, nearest scribble and label;
  the reference geometry), Dice at 256x256; single-mask variants only.

Dice is pooled over all slices of all cases (:func:`scribmed.sam.quality.dice_summary`).

Fine-tuning part (``--finetune``): :func:`scribmed.sam.rounds.run_pseudo_label_rounds` with
training patients 021-026 (as in the reference rows), validation patient 027, the held-out
patients as ``eval`` (pseudo-labelled and scored, never trained on), ``--rounds`` rounds of
``--epochs`` epochs; reports the held-out Dice after each round and checks the last round against the reference
fine-tuned rows (:data:`REFERENCE_FINETUNED`).

Point-prompt ablation (``--point-ablation``, SeSAM's Table 4 on medical data): pseudo-label Dice
from **simulated point labels** (``--ablation-points`` per class and slice, drawn from the full
labels by :func:`scribmed.data.weak_conversion.points_from_label`, seeded per case as ``scribmed weak
make`` seeds them) on held-out ACDC patients (``--patients``) and CHAOS T2 patients
(``--chaos-patients``, default fold 1's test patients present; scribbles are not used), for every
point sampling (centre-weighted, uniform random, boundary, SeSAM's skeleton grid) x mask
selection among SAM's three candidates (SAM's predicted IoU, uniform random, SeSAM's
coverage/compatibility rule), zero-shot LiteMedSAM. One table (mean foreground Dice, pooled over
slices) plus per-class JSON in ``runs/bench/point_ablation.{md,json}``.

Embeddings are cached under ``runs/bench/embeddings`` so reruns skip the encoder. Prints a table
and writes JSON (default ``runs/bench/pseudo_labels.json``).

    python benchmarks/pseudo_labels.py [--data-root DIR] [--patients 1,2,3] [--finetune --rounds 2 --epochs 2]
    python benchmarks/pseudo_labels.py --point-ablation
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data_root import add_data_root, dataset_dir  # noqa: E402
from scribmed.data.case import Case, CaseArrays  # noqa: E402
from scribmed.data.layouts import open_dataset  # noqa: E402
from scribmed.networks.sam_registry import build_sam_backend  # noqa: E402
from scribmed.sam.embedding_cache import EmbeddingCache  # noqa: E402
from scribmed.sam.pseudo_labels import ZERO_SHOT_PROMPTS, PromptConfig, generate_case  # noqa: E402
from scribmed.sam.quality import dice_summary  # noqa: E402

#: Reference LiteMedSAM zero-shot Dice measured on real ACDC: slices resized to 256x256, 10 points per
#: class evenly spaced along the scribble skeleton, single mask, Dice pooled over all slices of
#: patients 001-003 (both frames); keyed by the negatives setting.
REFERENCE_ZERO_SHOT = {
    "none": {"RV": 0.535, "Myo": 0.009, "LV": 0.717},
    "neighbour": {"RV": 0.288, "Myo": 0.011, "LV": 0.682},
}


def pid(n: int) -> str:
    return f"patient{n:03d}"


def square_case(case: Case, side: int = 256) -> Case:
    """The case with every slice resized to ``side``² (bilinear image, nearest scribble/label)."""
    def resize(a: np.ndarray, mode: str) -> np.ndarray:
        t = torch.from_numpy(np.asarray(a, dtype=np.float32))[:, None]
        kw = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
        return F.interpolate(t, (side, side), mode=mode, **kw)[:, 0].numpy()

    image = resize(case.image, "bilinear").astype(np.float32)
    scribble = resize(case.scribble, "nearest").astype(np.uint16)
    label = resize(case.label, "nearest").astype(np.uint8)
    arrays = CaseArrays(image, label, scribble)
    # no source file: the cache fingerprints the resized image's content
    return Case(f"{case.case_id}_sq{side}", case.patient_id, None, loader=lambda: arrays,  # type: ignore[arg-type]
                has_label=True, has_scribble=True)


#: zero-shot prompt variants: name -> PromptConfig fields (n_points is added from --n-points)
VARIANTS = {
    "single mask, positives (reference geometry)": {"negatives": "none"},
    "single mask, neighbour negatives": {"negatives": "neighbour"},
    "best of 3 masks, positives": {"negatives": "none", "multimask": True},
    "best of 3 masks, neighbour negatives": {"negatives": "neighbour", "multimask": True},
    "best of 3 masks, positives + scribble box": {"negatives": "none", "multimask": True, "boxes": True},
    "best of 3 masks, positives + scribble box + 5 px": {"negatives": "none", "multimask": True, "boxes": True,
                                                          "box_margin": 5},
    "best of 3 masks, neighbour negatives + scribble box + 5 px": {"negatives": "neighbour", "multimask": True,
                                                                    "boxes": True, "box_margin": 5},
}
#: the variants also run on slices squashed to 256x256 (the reference geometry)
SQUARE_VARIANTS = ("single mask, positives (reference geometry)", "single mask, neighbour negatives")
#: Reference LiteMedSAM Dice on the same held-out patients 001-003 (pooled over all slices) after
#: the mask decoder was fine-tuned on patients 021-026 (106 slices) for 2 / 3 epochs.
REFERENCE_FINETUNED = {"2 epochs": {"RV": 0.665, "Myo": 0.530, "LV": 0.889},
                       "3 epochs": {"RV": 0.683, "Myo": 0.542, "LV": 0.881}}


def zero_shot(dataset, cases: list[Case], backend, cache: EmbeddingCache, geometry: str,
              config: PromptConfig) -> dict:
    pairs = []
    t0 = time.perf_counter()
    for case in cases:
        c = square_case(case) if geometry == "square" else case
        label, _ = generate_case(backend, cache, c, dataset.class_map, config)
        pairs.append((label, c.label))
    s = dice_summary(pairs, dataset.class_map)
    return {"geometry": geometry, "prompts": config.to_dict(), "dice": s.pooled, "mean_per_case": s.mean_per_case,
            "cases": s.cases, "slices": int(sum(p[0].shape[0] for p in pairs)),
            "seconds": round(time.perf_counter() - t0, 1)}


POINT_MODES = ("center", "random", "boundary", "skeleton")
SELECTIONS = ("score", "random", "sesam")


def point_ablation(args: argparse.Namespace, backend, cache: EmbeddingCache) -> dict:
    """Pseudo-label Dice of point prompts: point sampling x mask selection, on ACDC and CHAOS T2 (see the module docstring)."""
    from scribmed.data.weak_conversion import case_rng, points_from_label
    from scribmed.sam.weak_prompting import WeakPromptConfig

    sets = [("ACDC", open_dataset("acdc-h5", args.data), [pid(int(n)) for n in args.patients.split(",")])]
    if args.chaos_data is not None:
        chaos = open_dataset("chaos-t2-nifti", args.chaos_data)
        wanted = [f"patient{int(n):02d}" for n in args.chaos_patients.split(",")]
        sets.append(("CHAOS T2", chaos, [p for p in wanted if p in set(chaos.patients)]))
    else:
        print(f"(no CHAOS_T2/ in the data folder {args.data.parent}: ACDC only)")
    report: dict = {"points_per_class": args.ablation_points, "seed": 0, "prompts": "zero-shot, points only",
                    "rows": []}
    for name, dataset, patients in sets:
        cases = dataset.cases_of(patients)
        for mode in POINT_MODES:
            for case in cases:
                weak = points_from_label(np.asarray(case.label), dataset.class_map, args.ablation_points, mode,
                                         case_rng(0, case.case_id), case_id=case.case_id)
                case.supervision, case.weak_loader, case._weak = "point", (lambda w=weak: w), None
            for rule in SELECTIONS:
                t0 = time.perf_counter()
                config = WeakPromptConfig(selection=rule)
                pairs = [(generate_case(backend, cache, c, dataset.class_map, ZERO_SHOT_PROMPTS, weak=config)[0],
                          c.label) for c in cases]
                s = dice_summary(pairs, dataset.class_map)
                fg = [v for v in s.pooled.values() if v is not None]
                row = {"dataset": name, "patients": patients, "point_mode": mode, "selection": rule,
                       "dice": s.pooled, "mean": float(np.mean(fg)) if fg else None,
                       "cases": s.cases, "seconds": round(time.perf_counter() - t0, 1)}
                report["rows"].append(row)
                print(f"{name} {mode:>8} {rule:>6}: mean {fmt(row['mean'])} "
                      + " ".join(f"{k} {fmt(v)}" for k, v in s.pooled.items()), flush=True)
    lines = [f"Zero-shot LiteMedSAM from {args.ablation_points} simulated points per class and slice "
             "(mean foreground Dice, pooled over slices)", "",
             "| point sampling | " + " | ".join(f"{n}: {r}" for n, _, _ in sets for r in SELECTIONS) + " |",
             "|---|" + "---|" * (len(sets) * len(SELECTIONS))]
    for mode in POINT_MODES:
        cells = []
        for n, _, _ in sets:
            for r in SELECTIONS:
                row = next(x for x in report["rows"] if (x["dataset"], x["point_mode"], x["selection"]) == (n, mode, r))
                cells.append(fmt(row["mean"]))
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    lines += ["", "Patients: " + "; ".join(f"{n} {', '.join(p)}" for n, _, p in sets) + "."]
    report["table"] = "\n".join(lines) + "\n"
    return report


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_root(ap, ("ACDC", "CHAOS_T2"))
    ap.add_argument("--patients", default="1,2,3", help="held-out patient numbers")
    ap.add_argument("--n-points", type=int, default=10)
    ap.add_argument("--geometries", default="aspect,square")
    ap.add_argument("--finetune", action="store_true", help="also run decoder fine-tuning rounds")
    ap.add_argument("--skip-zero-shot", action="store_true",
                    help="only the fine-tuning part (adds its result to an existing --out JSON)")
    ap.add_argument("--train", default="21,22,23,24,25,26", help="fine-tuning patient numbers")
    ap.add_argument("--val", default="27", help="validation patient numbers")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-5, help="decoder AdamW learning rate")
    ap.add_argument("--encoder-runtime", default="auto", choices=("auto", "torch", "openvino", "onnxruntime"),
                    help="image encoder runtime (default auto, as scribmed)")
    ap.add_argument("--loss-resolution", default="low", choices=("low", "full"),
                    help="decoder fine-tuning loss resolution (default low, as scribmed)")
    ap.add_argument("--cache", type=Path, default=REPO / "runs" / "bench" / "embeddings")
    ap.add_argument("--run-dir", type=Path, default=REPO / "runs" / "bench" / "pseudo_label_rounds")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "pseudo_labels.json")
    ap.add_argument("--point-ablation", action="store_true",
                    help="only the point sampling x mask selection table (SeSAM Table 4 analogue)")
    ap.add_argument("--ablation-points", type=int, default=5, help="simulated points per class and slice")
    ap.add_argument("--chaos-patients", default="5,13,21", help="CHAOS T2 patient numbers (fold 1 test)")
    ap.add_argument("--ablation-out", type=Path, default=REPO / "runs" / "bench" / "point_ablation.json")
    args = ap.parse_args()
    args.data = dataset_dir(args, "ACDC")
    args.chaos_data = dataset_dir(args, "CHAOS_T2", required=False) if args.point_ablation else None
    if args.point_ablation:
        backend = build_sam_backend("lite_medsam", encoder_runtime=args.encoder_runtime)
        report = point_ablation(args, backend, EmbeddingCache(args.cache, backend, progress=False))
        args.ablation_out.parent.mkdir(parents=True, exist_ok=True)
        args.ablation_out.write_text(json.dumps(report, indent=1))
        args.ablation_out.with_suffix(".md").write_text(report["table"])
        print("\n" + report["table"])
        print(f"written: {args.ablation_out}")
        return

    dataset = open_dataset("acdc-h5", args.data)
    held = [pid(int(n)) for n in args.patients.split(",")]
    cases = dataset.cases_of(held)
    backend = build_sam_backend("lite_medsam", encoder_runtime=args.encoder_runtime)
    cache = EmbeddingCache(args.cache, backend, progress=False)
    report: dict = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "encoder_runtime": backend.encoder_runtime, "loss_resolution": args.loss_resolution,
        "held_out": held, "cases": [c.case_id for c in cases], "n_points": args.n_points,
        "zero_shot": [], "reference_zero_shot_square": REFERENCE_ZERO_SHOT,
    }
    print(f"zero-shot LiteMedSAM on {', '.join(held)} ({len(cases)} volumes), pooled Dice")
    print("| geometry | prompts | RV | Myo | LV | slices | s |")
    print("|---|---|---|---|---|---|---|")
    default = {k: v for k, v in ZERO_SHOT_PROMPTS.to_dict().items() if k != "n_points"}
    for geometry in [] if args.skip_zero_shot else args.geometries.split(","):
        for name, fields in VARIANTS.items():
            if geometry == "square" and name not in SQUARE_VARIANTS:
                continue
            config = PromptConfig(n_points=args.n_points, **fields)
            row = zero_shot(dataset, cases, backend, cache, geometry, config)
            row["variant"] = name
            row["default"] = geometry == "aspect" and {k: v for k, v in config.to_dict().items() if k != "n_points"} == default
            report["zero_shot"].append(row)
            d = row["dice"]
            tag = " (**scribmed default**)" if row["default"] else ""
            print(f"| {geometry} | {name}{tag} | {fmt(d['RV'])} | {fmt(d['Myo'])} | {fmt(d['LV'])} | "
                  f"{row['slices']} | {row['seconds']} |", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1))
    for negatives, d in REFERENCE_ZERO_SHOT.items():
        print(f"| reference (square) | single mask, {negatives} | {d['RV']} | {d['Myo']} | {d['LV']} | | |")
    defaults = [r for r in report["zero_shot"] if r.get("default")]
    if defaults:
        d, ref = defaults[0]["dice"], REFERENCE_ZERO_SHOT["none"]
        ok = all(d[c] is not None and d[c] >= ref[c] for c in ref)
        print("default zero-shot vs reference zero-shot row: "
              + ", ".join(f"{c} {d[c]:.3f} vs {ref[c]:.3f}" for c in ref) + (" -> at least as good" if ok else " -> BELOW"))
        report["default_zero_shot_meets_reference"] = ok

    if args.finetune:
        from scribmed.sam.finetune_config import FinetuneConfig
        from scribmed.sam.rounds import run_pseudo_label_rounds
        from scribmed.sam.stage_config import RoundsConfig

        t0 = time.perf_counter()
        config = RoundsConfig(
            backend=backend, rounds=args.rounds, cache_dir=args.cache,
            finetune_config=FinetuneConfig(epochs=args.epochs, lr=args.lr, loss_resolution=args.loss_resolution,
                                           progress=False),
        )
        result = run_pseudo_label_rounds(
            dataset, args.run_dir, config,
            train_patients=[pid(int(n)) for n in args.train.split(",")],
            val_patients=[pid(int(n)) for n in args.val.split(",")],
            eval_patients=held, progress=False,
        )
        rows = []
        print(f"\nfine-tuning rounds (train {args.train}, val {args.val}), held-out pooled Dice")
        print("| round | RV | Myo | LV | train-set RV | Myo | LV |")
        print("|---|---|---|---|---|---|---|")
        for e in result.quality["rounds"]:
            sub = e.get("dice_by_subset", {})
            ev, tr = sub.get("eval", {}).get("dice", {}), sub.get("train", {}).get("dice", {})
            rows.append({"round": e["round"], "held_out": ev, "train": tr, "val_dice": e.get("best_val_dice")})
            print(f"| {e['round']} | {fmt(ev.get('RV'))} | {fmt(ev.get('Myo'))} | {fmt(ev.get('LV'))} | "
                  f"{fmt(tr.get('RV'))} | {fmt(tr.get('Myo'))} | {fmt(tr.get('LV'))} |")
        last = rows[-1]["held_out"] if rows else {}
        for label, ref in REFERENCE_FINETUNED.items():
            ok = all(last.get(c) is not None and last[c] >= ref[c] for c in ref)
            print(f"last round held-out vs reference fine-tuned ({label}): "
                  + ", ".join(f"{c} {fmt(last.get(c))} vs {ref[c]:.3f}" for c in ref)
                  + (" -> at least as good" if ok else " -> BELOW"))
        finetune = {"train": args.train, "val": args.val, "rounds": args.rounds, "epochs": args.epochs, "lr": args.lr,
                    "per_round": rows, "seconds": round(time.perf_counter() - t0, 1),
                    "encoder_slices": result.encoder_slices}
        if args.skip_zero_shot and args.out.is_file():  # re-read: a zero-shot run may have written meanwhile
            report = json.loads(args.out.read_text())
        report["finetune"] = finetune
    if not args.skip_zero_shot or args.finetune:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
