"""Quality of LiteMedSAM pseudo labels on real ACDC: zero-shot prompts, then decoder fine-tuning rounds.

Zero-shot part (always): for the held-out patients (default 001-003, both frames; ``acdc-h5`` layout
under ``../shared/data/ACDC`` or ``--data``), pseudo labels from 10 points per class along the
scribble skeleton, with and without neighbour negatives, each in two geometries:

* ``aspect``: scribmed's backend (longest side resized to 256, aspect kept, zero-padded), Dice at
  the native resolution;
* ``square``: every slice first resized to 256x256 (bilinear image, nearest scribble and label;
  what DESIGN.md §4.3 measured), Dice at 256x256.

Dice is pooled over all slices of all cases (:func:`scribmed.sam.quality.dice_summary`).

Fine-tuning part (``--finetune``): :func:`scribmed.sam.rounds.run_pseudo_label_rounds` with
training patients 021-026 (as §4.3), validation patient 027, the held-out patients as ``eval``
(pseudo-labelled and scored, never trained on), ``--rounds`` rounds of ``--epochs`` epochs;
reports the held-out Dice after each round.

Embeddings are cached under ``runs/bench/embeddings`` so reruns skip the encoder. Prints a table
and writes JSON (default ``runs/bench/pseudo_labels.json``).

    python benchmarks/pseudo_labels.py [--data DIR] [--patients 1,2,3] [--finetune --rounds 1 --epochs 2]
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

from scribmed.data.case import Case, CaseArrays  # noqa: E402
from scribmed.data.layouts import open_dataset  # noqa: E402
from scribmed.networks.sam_backends import build_sam_backend  # noqa: E402
from scribmed.sam.embedding_cache import EmbeddingCache  # noqa: E402
from scribmed.sam.pseudo_labels import PromptConfig, generate_case  # noqa: E402
from scribmed.sam.quality import dice_summary  # noqa: E402

DESIGN_ZERO_SHOT = {
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


def zero_shot(dataset, cases: list[Case], backend, cache: EmbeddingCache, geometry: str, negatives: str,
              n_points: int) -> dict:
    config = PromptConfig(n_points=n_points, negatives=negatives)
    pairs = []
    t0 = time.perf_counter()
    for case in cases:
        c = square_case(case) if geometry == "square" else case
        label, _ = generate_case(backend, cache, c, dataset.class_map, config)
        pairs.append((label, c.label))
    s = dice_summary(pairs, dataset.class_map)
    return {"geometry": geometry, "negatives": negatives, "dice": s.pooled, "mean_per_case": s.mean_per_case,
            "cases": s.cases, "slices": int(sum(p[0].shape[0] for p in pairs)),
            "seconds": round(time.perf_counter() - t0, 1)}


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ACDC")
    ap.add_argument("--patients", default="1,2,3", help="held-out patient numbers")
    ap.add_argument("--n-points", type=int, default=10)
    ap.add_argument("--geometries", default="aspect,square")
    ap.add_argument("--finetune", action="store_true", help="also run decoder fine-tuning rounds")
    ap.add_argument("--skip-zero-shot", action="store_true",
                    help="only the fine-tuning part (adds its result to an existing --out JSON)")
    ap.add_argument("--train", default="21,22,23,24,25,26", help="fine-tuning patient numbers")
    ap.add_argument("--val", default="27", help="validation patient numbers")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=REPO / "runs" / "bench" / "embeddings")
    ap.add_argument("--run-dir", type=Path, default=REPO / "runs" / "bench" / "pseudo_label_rounds")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "pseudo_labels.json")
    args = ap.parse_args()

    dataset = open_dataset("acdc-h5", args.data)
    held = [pid(int(n)) for n in args.patients.split(",")]
    cases = dataset.cases_of(held)
    backend = build_sam_backend("lite_medsam")
    cache = EmbeddingCache(args.cache, backend, progress=False)
    report: dict = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "held_out": held, "cases": [c.case_id for c in cases], "n_points": args.n_points,
        "zero_shot": [], "design_zero_shot_square": DESIGN_ZERO_SHOT,
    }
    print(f"zero-shot LiteMedSAM on {', '.join(held)} ({len(cases)} volumes), pooled Dice")
    print("| geometry | negatives | RV | Myo | LV | slices | s |")
    print("|---|---|---|---|---|---|---|")
    for geometry in [] if args.skip_zero_shot else args.geometries.split(","):
        for negatives in ("none", "neighbour"):
            row = zero_shot(dataset, cases, backend, cache, geometry, negatives, args.n_points)
            report["zero_shot"].append(row)
            d = row["dice"]
            print(f"| {geometry} | {negatives} | {fmt(d['RV'])} | {fmt(d['Myo'])} | {fmt(d['LV'])} | "
                  f"{row['slices']} | {row['seconds']} |", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1))
    for negatives, d in DESIGN_ZERO_SHOT.items():
        print(f"| DESIGN §4.3 (square) | {negatives} | {d['RV']} | {d['Myo']} | {d['LV']} | | |")

    if args.finetune:
        from scribmed.sam.decoder_finetune import FinetuneConfig
        from scribmed.sam.rounds import run_pseudo_label_rounds

        t0 = time.perf_counter()
        result = run_pseudo_label_rounds(
            backend, dataset, args.run_dir, rounds=args.rounds,
            train_patients=[pid(int(n)) for n in args.train.split(",")],
            val_patients=[pid(int(n)) for n in args.val.split(",")],
            eval_patients=held,
            finetune_config=FinetuneConfig(epochs=args.epochs, progress=False),
            cache_dir=args.cache, progress=False,
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
        finetune = {"train": args.train, "val": args.val, "rounds": args.rounds, "epochs": args.epochs,
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
