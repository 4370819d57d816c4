"""Speed of Dice + HD95 for the 3 foreground classes of an ACDC volume: scribmed vs medpy vs MONAI.

Loads a few real ACDC label volumes (``ACDC/``, ``acdc-h5``, in the data folder: ``--data-root DIR``
or ``$SCRIBMED_DATA``), derives perturbed "predictions" from them (in-plane dilation / erosion, a
2-pixel shift, a dropped slice, boundary noise), and times, interleaved in the same run:

* scribmed: ``evaluate_case`` (Dice, HD95 and ASD of classes 1-3 in one pass);
* medpy: ``dc`` + ``hd95`` per class on ``pred == c`` / ``ref == c``;
* MONAI: ``compute_hausdorff_distance(percentile=95)`` + ``compute_dice`` on one-hot tensors,
  timed both from the label arrays (one-hot conversion included) and from ready tensors.

It checks that scribmed's Dice/HD95 equal medpy's (max abs difference, must be ≤ 1e-6), prints a
table of seconds per volume and the ratios, and writes JSON (default ``runs/bench/metrics_speed.json``).
``--synthetic`` times phantom-like synthetic volumes instead and needs no data.

    python benchmarks/metrics_speed.py [--data-root DIR | --synthetic] [--cases 3] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data_root import add_data_root, dataset_dir  # noqa: E402
from scribmed.runtime.files import atomic_write_text  # noqa: E402
from scribmed.metrics import evaluate_case  # noqa: E402

CLASSES = (1, 2, 3)
ACDC_SPACING = (10.0, 1.5625, 1.5625)  # typical ACDC slice thickness / in-plane spacing (mm)


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def load_acdc(root: Path, n: int) -> list[tuple[str, np.ndarray]]:
    import h5py

    files = sorted((root / "ACDC_training_volumes").glob("patient*_frame*.h5"))
    picks = [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)] if files else []
    out = []
    for f in picks:
        with h5py.File(f, "r") as h:
            out.append((f.stem, np.asarray(h["label"][:], dtype=np.uint8)))
    return out


def phantom(seed: int, shape: tuple[int, int, int] = (10, 256, 216)) -> np.ndarray:
    """A cardiac-like label volume: LV disk, myocardial ring, RV crescent, tapering to the apex."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float64)
    cy, cx = shape[1] / 2 + rng.uniform(-10, 10), shape[2] / 2 + rng.uniform(-10, 10)
    taper = 1.0 - 0.6 * (z / (shape[0] - 1)) ** 2
    r_lv = rng.uniform(18, 24) * taper
    r_myo = r_lv + rng.uniform(6, 9)
    dist = np.hypot(y - cy, x - cx)
    lab = np.zeros(shape, dtype=np.uint8)
    rv = (np.hypot(y - cy, x - (cx - r_myo * 1.1)) < r_myo * 1.1) & (dist >= r_myo)
    lab[rv & (z < shape[0] - 2)] = 1
    lab[(dist < r_myo) & (dist >= r_lv)] = 2
    lab[dist < r_lv] = 3
    return lab


def perturbations(ref: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Prediction-like corruptions of a reference label volume (every class stays non-empty)."""
    rng = np.random.default_rng(seed)
    inplane = np.zeros((3, 3, 3), dtype=bool)
    inplane[1] = ndimage.generate_binary_structure(2, 1)

    def per_class(op: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        out = np.zeros_like(ref)
        for c in CLASSES:
            out[op(ref == c)] = c
        return out

    dropped = ref.copy()
    dropped[ref.shape[0] // 2] = 0
    boundary = ref != ndimage.grey_erosion(ref, footprint=inplane)
    noisy = ref.copy()
    flip = boundary & (rng.random(ref.shape) < 0.3)
    noisy[flip] = ndimage.grey_dilation(ref, footprint=inplane)[flip]
    return {
        "dilate_1px": ndimage.grey_dilation(ref, footprint=inplane),
        "erode_1px": per_class(lambda m: ndimage.binary_erosion(m, inplane)),
        "shift_2px": np.roll(ref, 2, axis=2),
        "drop_slice": dropped,
        "boundary_noise": noisy,
    }


# ------------------------------------------------------------------------------------------------
# the three implementations
# ------------------------------------------------------------------------------------------------


def run_scribmed(pred: np.ndarray, ref: np.ndarray, spacing) -> list[tuple[float, float]]:
    res = evaluate_case(pred, ref, CLASSES, spacing)
    return [(r.dice, r.hd95) for r in res]


def run_medpy(pred: np.ndarray, ref: np.ndarray, spacing) -> list[tuple[float, float]]:
    from medpy.metric import binary

    return [(binary.dc(pred == c, ref == c), binary.hd95(pred == c, ref == c, voxelspacing=spacing)) for c in CLASSES]


def monai_onehot(pred: np.ndarray, ref: np.ndarray):
    import torch
    from monai.networks.utils import one_hot

    n = max(CLASSES) + 1
    p = one_hot(torch.as_tensor(pred[None, None].astype(np.int64)), n)
    r = one_hot(torch.as_tensor(ref[None, None].astype(np.int64)), n)
    return p, r


def run_monai_tensors(p, r, spacing) -> list[tuple[float, float]]:
    from monai.metrics import compute_dice, compute_hausdorff_distance

    hd = compute_hausdorff_distance(p, r, include_background=False, percentile=95, spacing=spacing)
    dice = compute_dice(p, r, include_background=False)
    return [(float(dice[0, k]), float(hd[0, k])) for k in range(len(CLASSES))]


def run_monai(pred: np.ndarray, ref: np.ndarray, spacing) -> list[tuple[float, float]]:
    p, r = monai_onehot(pred, ref)
    return run_monai_tensors(p, r, spacing)


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def main(argv: Optional[list[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_root(ap, ("ACDC",))
    ap.add_argument("--synthetic", action="store_true", help="phantom-like synthetic volumes instead (no data needed)")
    ap.add_argument("--cases", type=int, default=3, help="number of volumes (spread over the dataset)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per volume and perturbation (median kept)")
    ap.add_argument("--spacing", default="both", choices=["both", "pixels", "mm"],
                    help=f"pixel units, ACDC-like mm spacing {ACDC_SPACING}, or both")
    ap.add_argument("--no-monai", action="store_true", help="skip MONAI")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads for MONAI (default 1: scribmed and medpy are single-threaded, "
                         "and extra threads only contend on a shared CPU)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "metrics_speed.json")
    args = ap.parse_args(argv)

    if args.synthetic:
        volumes = [(f"phantom{i}", phantom(i)) for i in range(args.cases)]
        source = "SYNTHETIC phantom volumes"
    else:
        acdc = dataset_dir(args, "ACDC")
        volumes = load_acdc(acdc, args.cases)
        if not volumes:
            raise SystemExit(f"error: {acdc / 'ACDC_training_volumes'}: no patient*_frame*.h5 volumes")
        source = f"ACDC h5 label volumes from {acdc}"
    print(f"data: {source}: {[name for name, _ in volumes]}")

    use_monai = not args.no_monai
    if use_monai:
        try:
            import monai  # noqa: F401
            import torch

            torch.set_num_threads(args.torch_threads)
        except ImportError:
            print("MONAI not installed: skipping it")
            use_monai = False
    spacings = {"pixels": [None], "mm": [ACDC_SPACING], "both": [None, ACDC_SPACING]}[args.spacing]

    rows = []
    worst_diff = 0.0
    worst_monai_diff = 0.0
    for spacing in spacings:
        for name, ref in volumes:
            for pname, pred in perturbations(ref, seed=len(rows)).items():
                times: dict[str, list[float]] = {"scribmed": [], "medpy": [], "monai": [], "monai_tensors": []}
                results = {}
                tensors = monai_onehot(pred, ref) if use_monai else None
                for _ in range(args.repeats):  # interleaved so load changes hit all equally
                    t, results["scribmed"] = timed(lambda: run_scribmed(pred, ref, spacing))
                    times["scribmed"].append(t)
                    t, results["medpy"] = timed(lambda: run_medpy(pred, ref, spacing))
                    times["medpy"].append(t)
                    if use_monai:
                        t, results["monai"] = timed(lambda: run_monai(pred, ref, spacing))
                        times["monai"].append(t)
                        t, _ = timed(lambda: run_monai_tensors(*tensors, spacing))
                        times["monai_tensors"].append(t)
                diff = float(np.max(np.abs(np.asarray(results["scribmed"]) - np.asarray(results["medpy"]))))
                worst_diff = max(worst_diff, diff)
                row = {
                    "case": name, "perturbation": pname, "spacing": spacing,
                    "seconds": {k: statistics.median(v) for k, v in times.items() if v},
                    "max_abs_diff_vs_medpy": diff,
                }
                if use_monai:
                    mon = evaluate_case(pred, ref, CLASSES, spacing, hd95_mode="monai")
                    mdiff = float(np.max(np.abs(np.asarray([r.hd95 for r in mon]) - np.asarray([v[1] for v in results["monai"]]))))
                    row["max_abs_diff_monai_mode_vs_monai"] = mdiff
                    worst_monai_diff = max(worst_monai_diff, mdiff)
                rows.append(row)

    def mean_time(key: str, spacing=...) -> float:
        vals = [r["seconds"][key] for r in rows if key in r["seconds"] and (spacing is ... or r["spacing"] == spacing)]
        return float(np.mean(vals)) if vals else float("nan")

    keys = ["scribmed", "medpy"] + (["monai", "monai_tensors"] if use_monai else [])
    table = {}
    print(f"\n{'units':8s} {'method':15s} {'s/volume':>10s} {'ratio to scribmed':>18s}")
    for spacing in spacings + ([...] if len(spacings) > 1 else []):
        label = "all" if spacing is ... else ("pixels" if spacing is None else "mm")
        base = mean_time("scribmed", spacing)
        table[label] = {}
        for k in keys:
            t = mean_time(k, spacing)
            table[label][k] = {"seconds_per_volume": t, "ratio_to_scribmed": t / base}
            print(f"{label:8s} {k:15s} {t:10.4f} {t / base:17.1f}x")
    overall = table["all" if "all" in table else next(iter(table))]  # every unit setting together
    speedups = {k: overall[k]["ratio_to_scribmed"] for k in ("medpy", "monai") if k in overall}
    print("\nscribmed is " + ", ".join(f"{v:.1f}x {k}" for k, v in speedups.items())
          + " (targets: 30x medpy, 5x MONAI from label arrays)")
    print(f"\nmax |scribmed - medpy| over Dice and HD95: {worst_diff:.3g} ({'OK' if worst_diff <= 1e-6 else 'MISMATCH'})")
    if use_monai:
        print(f"max |scribmed(hd95_mode='monai') - MONAI HD95|: {worst_monai_diff:.3g} (MONAI computes in float32)")
    print("per perturbation (all units), seconds per volume:")
    for pname in dict.fromkeys(r["perturbation"] for r in rows):
        sel = [r for r in rows if r["perturbation"] == pname]
        parts = [f"{k} {np.mean([r['seconds'][k] for r in sel]):.4f}" for k in keys]
        print(f"  {pname:15s} " + "  ".join(parts))

    result = {
        "benchmark": "metrics_speed",
        "task": "Dice + HD95 of classes 1-3 per volume",
        "data": source,
        "cases": [n for n, _ in volumes],
        "repeats": args.repeats,
        "summary": table,
        "speedup": speedups,
        "max_abs_diff_vs_medpy": worst_diff,
        "values_match_medpy_1e-6": worst_diff <= 1e-6,
        "max_abs_diff_monai_mode_vs_monai": worst_monai_diff if use_monai else None,
        "rows": rows,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "notes": "monai = one-hot conversion from label arrays included; monai_tensors = ready one-hot tensors. "
                 f"torch threads {args.torch_threads}.",
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
