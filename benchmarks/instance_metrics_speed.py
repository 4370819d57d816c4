"""Speed of the vectorised instance metrics vs naive loop implementations on a 2048 x 2048 map.

Builds a synthetic nucleus-like instance map (``--cells``² jittered cells, most holding one
random non-overlapping ellipse: ~1,500 instances at the default 40 x 40 cells of 51 px) and a
perturbed prediction (shifted, axes rescaled, some instances split, merged with a neighbour or
dropped, a few false positives), then times, median of ``--repeats``:

* scribmed: ``overlap_table``, every metric function end to end (``dsb_score``, ``f1`` at 0.5
  and at 0.3 (optimal assignment), ``aji``, ``aji_plus``, ``panoptic_quality_parts``) and
  ``evaluate_instance_case`` (all metrics from one table);
* a naive per-instance loop (the common implementation: a full-image mask per reference
  instance, the predictions under it, a full-image mask per overlapping prediction), on the
  full map; if the first instances predict more than 60 s it runs over a subset of references
  and extrapolates, and says so;
* a naive all-pairs loop (a full-image mask pair for every (prediction, reference) pair), on a
  crop of ``--naive-cells``² cells only (it would take hours on the full map), with the
  full-map time extrapolated from its cost per pair and pixel.

Both naive versions compute DSB, F1, AJI and PQ from their IoU matrices; the values are
checked against scribmed's. Prints a table of seconds and ratios and writes JSON (default
``runs/bench/instance_metrics.json``).

    python benchmarks/instance_metrics_speed.py [--size 2048] [--cells 40] [--naive-cells 12]
        [--repeats 3] [--seed 0] [--out FILE]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scribmed.runtime.files import atomic_write_text  # noqa: E402
from scribmed.metrics import (  # noqa: E402
    DSB_THRESHOLDS,
    aji,
    aji_plus,
    dsb_score,
    evaluate_instance_case,
    f1,
    overlap_table,
    panoptic_quality_parts,
)

LOOP_BUDGET_S = 60.0


def _ratio(x: float) -> str:
    return f"{x:.2f}x" if x < 10 else f"{x:,.0f}x"


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def _draw(size: int, cells: int, cy: np.ndarray, cx: np.ndarray, a: np.ndarray, b: np.ndarray,
          theta: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paint one ellipse per cell (id 0 = none) into a ``size``² map; also return each pixel's
    coordinate along the ellipse's major axis (used to split instances)."""
    step = size // cells
    yy, xx = np.mgrid[:size, :size]
    ci = np.minimum(yy // step, cells - 1) * cells + np.minimum(xx // step, cells - 1)
    dy, dx = yy - cy[ci], xx - cx[ci]
    c, s = np.cos(theta[ci]), np.sin(theta[ci])
    u, v = c * dx + s * dy, -s * dx + c * dy
    inside = (u / a[ci]) ** 2 + (v / b[ci]) ** 2 <= 1.0
    return np.where(inside, ids[ci], 0).astype(np.int32), u


def synthetic_pair(size: int, cells: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """A reference map with ~0.94 * cells² ellipses and a perturbed prediction."""
    rng = np.random.default_rng(seed)
    n = cells * cells
    step = size // cells
    half = step / 2
    a = rng.uniform(8, 0.42 * step, n)
    b = a * rng.uniform(0.55, 1.0, n)
    theta = rng.uniform(0, np.pi, n)
    room = half - a - 4  # keep the (slightly enlarged, shifted) prediction inside the cell
    gy, gx = np.divmod(np.arange(n), cells)
    cy = gy * step + half + rng.uniform(-1, 1, n) * np.maximum(room, 0)
    cx = gx * step + half + rng.uniform(-1, 1, n) * np.maximum(room, 0)
    present = rng.random(n) < 0.94
    ref_ids = np.where(present, rng.choice(np.arange(1, 200_000), n, replace=False), 0)
    ref, _ = _draw(size, cells, cy, cx, a, b, theta, ref_ids)

    scale = rng.uniform(0.85, 1.12, n)
    fate = rng.random(n)
    dropped = present & (fate < 0.04)
    split = present & (fate >= 0.04) & (fate < 0.09)
    merged = present & (fate >= 0.09) & (fate < 0.12) & (gx < cells - 1)
    fp = ~present & (rng.random(n) < 0.5)
    pred_ids = np.where((present & ~dropped) | fp, rng.choice(np.arange(1, 200_000), n, replace=False), 0)
    right = np.flatnonzero(merged) + 1  # merge with the neighbour on the right
    pred_ids[right] = np.where(pred_ids[right] > 0, pred_ids[right - 1], 0)
    pa = np.where(fp, rng.uniform(4, 8, n), a * scale)
    pb = np.where(fp, pa, b * scale)
    pred, u = _draw(size, cells, cy + 2 + rng.normal(0, 0.7, n), cx + 1 + rng.normal(0, 0.7, n), pa, pb,
                    theta + rng.normal(0, 0.1, n), pred_ids)
    step_i = size // cells
    yy, xx = np.mgrid[:size, :size]
    ci = np.minimum(yy // step_i, cells - 1) * cells + np.minimum(xx // step_i, cells - 1)
    halves = split[ci] & (u > 0) & (pred > 0)
    pred[halves] = pred[halves] + 300_000  # the second half of a split instance gets a new id
    info = {
        "ref_instances": int(present.sum()), "dropped": int(dropped.sum()), "split": int(split.sum()),
        "merged_pairs": int((merged & (np.roll(present & ~dropped, -1))).sum()), "false_positives": int(fp.sum()),
    }
    return pred, ref, info


# ------------------------------------------------------------------------------------------------
# naive implementations (for timing and as an independent check)
# ------------------------------------------------------------------------------------------------


def naive_all_pairs(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dense intersection matrix from a full-image mask pair for every (prediction, reference)."""
    p_ids = [v for v in np.unique(pred) if v != 0]
    r_ids = [v for v in np.unique(ref) if v != 0]
    p_masks = [pred == p for p in p_ids]
    r_masks = [ref == r for r in r_ids]
    inter = np.zeros((len(p_ids), len(r_ids)), np.int64)
    for i, pm in enumerate(p_masks):
        for j, rm in enumerate(r_masks):
            inter[i, j] = np.count_nonzero(pm & rm)
    pa = np.array([m.sum() for m in p_masks], np.int64)
    ra = np.array([m.sum() for m in r_masks], np.int64)
    return inter, pa, ra, np.array(p_ids)


def naive_per_instance(pred: np.ndarray, ref: np.ndarray, max_refs: Optional[int] = None):
    """Per reference: its full-image mask, the predictions under it, one mask per such prediction."""
    p_ids = np.array([v for v in np.unique(pred) if v != 0])
    r_ids = np.array([v for v in np.unique(ref) if v != 0])
    p_pos = {int(v): i for i, v in enumerate(p_ids)}
    pa = np.array([np.count_nonzero(pred == p) for p in p_ids], np.int64) if max_refs is None else None
    inter = np.zeros((len(p_ids), len(r_ids)), np.int64)
    ra = np.zeros(len(r_ids), np.int64)
    for j, r in enumerate(r_ids[:max_refs]):
        rm = ref == r
        ra[j] = np.count_nonzero(rm)
        for p in np.unique(pred[rm]):
            if p != 0:
                inter[p_pos[int(p)], j] = np.count_nonzero((pred == p) & rm)
    return inter, pa, ra, p_ids


def naive_scores(inter: np.ndarray, pa: np.ndarray, ra: np.ndarray) -> dict[str, float]:
    """DSB, F1@0.5, AJI, PQ from a dense intersection matrix, with Python loops."""
    n_p, n_r = inter.shape
    union = pa[:, None] + ra[None, :] - inter
    iou = np.where(inter > 0, inter / np.maximum(union, 1), 0.0)
    dsb = []
    for t in DSB_THRESHOLDS:
        tp = int(np.count_nonzero(iou > t))
        dsb.append(tp / (n_p + n_r - tp))
    tp = int(np.count_nonzero(iou > 0.5))
    c = u = 0
    used = np.zeros(n_p, bool)
    for j in range(n_r):
        col = iou[:, j]
        if not np.any(inter[:, j]):
            u += ra[j]
            continue
        i = int(np.argmax(col))
        c += inter[i, j]
        u += union[i, j]
        used[i] = True
    u += pa[~used].sum()
    half = tp + 0.5 * (n_p - tp) + 0.5 * (n_r - tp)
    return {"dsb_score": float(np.mean(dsb)), "f1": 2 * tp / (n_p + n_r), "aji": float(c / u),
            "pq": float(iou[iou > 0.5].sum() / half)}


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def scribmed_timings(pred: np.ndarray, ref: np.ndarray, repeats: int) -> dict[str, float]:
    fns: dict[str, Callable[[], object]] = {
        "overlap_table": lambda: overlap_table(pred, ref),
        "dsb_score": lambda: dsb_score(pred, ref),
        "f1 (IoU > 0.5)": lambda: f1(pred, ref),
        "f1 (IoU > 0.3, assignment)": lambda: f1(pred, ref, 0.3),
        "aji": lambda: aji(pred, ref),
        "aji_plus": lambda: aji_plus(pred, ref),
        "panoptic_quality_parts": lambda: panoptic_quality_parts(pred, ref),
        "evaluate_instance_case (all metrics)": lambda: evaluate_instance_case(pred, ref),
    }
    return {k: timed(fn, repeats)[0] for k, fn in fns.items()}


def check(res, scores: dict[str, float]) -> float:
    mine = {"dsb_score": res.dsb_score, "f1": res.f1, "aji": res.aji, "pq": res.pq}
    return max(abs(mine[k] - scores[k]) for k in scores)


def main(argv: Optional[list[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2048, help="map side in pixels")
    ap.add_argument("--cells", type=int, default=40, help="cells per side (one ellipse per kept cell)")
    ap.add_argument("--naive-cells", type=int, default=12, help="crop side, in cells, for the all-pairs loop")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the scribmed functions (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "instance_metrics.json")
    args = ap.parse_args(argv)

    pred, ref, info = synthetic_pair(args.size, args.cells, args.seed)
    res = evaluate_instance_case(pred, ref)
    print(f"map {args.size}x{args.size}: {res.n_ref} reference, {res.n_pred} predicted instances "
          f"({info['split']} split, {info['merged_pairs']} merged pairs, {info['dropped']} dropped, "
          f"{info['false_positives']} false positives); DSB {res.dsb_score:.4f}, F1 {res.f1:.4f}, "
          f"AJI {res.aji:.4f}, AJI+ {res.aji_plus:.4f}, PQ {res.pq:.4f}")

    full = scribmed_timings(pred, ref, args.repeats)
    base = full["evaluate_instance_case (all metrics)"]

    # naive per-instance loop on the full map (or a subset of references when it would be > 60 s)
    probe = 20
    t0 = time.perf_counter()
    naive_per_instance(pred, ref, max_refs=probe)
    per_ref = (time.perf_counter() - t0) / probe
    estimate = per_ref * res.n_ref
    if estimate <= LOOP_BUDGET_S:
        t_loop, (inter, pa, ra, _) = timed(lambda: naive_per_instance(pred, ref), 1)
        loop_note = "measured on the full map"
        loop_diff = check(res, naive_scores(inter, pa, ra))
    else:
        n_sub = max(probe, int(LOOP_BUDGET_S / 2 / per_ref))
        t_sub, _ = timed(lambda: naive_per_instance(pred, ref, max_refs=n_sub), 1)
        t_loop = t_sub * res.n_ref / n_sub
        loop_note = f"EXTRAPOLATED from {n_sub} of {res.n_ref} reference instances (full run > {LOOP_BUDGET_S:.0f} s)"
        loop_diff = None

    # naive all-pairs loop on a crop
    step = args.size // args.cells
    side = args.naive_cells * step
    cp, cr = pred[:side, :side], ref[:side, :side]
    crop_res = evaluate_instance_case(cp, cr)
    crop = scribmed_timings(cp, cr, args.repeats)
    t_pairs, (inter_c, pa_c, ra_c, _) = timed(lambda: naive_all_pairs(cp, cr), 1)
    pairs_diff = check(crop_res, naive_scores(inter_c, pa_c, ra_c))
    t_loop_crop, (inter_l, pa_l, ra_l, _) = timed(lambda: naive_per_instance(cp, cr), 1)
    crop_pairs = crop_res.n_pred * crop_res.n_ref
    per_pair_pixel = t_pairs / (crop_pairs * cp.size)
    t_pairs_full = per_pair_pixel * res.n_pred * res.n_ref * pred.size

    rows = []
    print(f"\nfull map {args.size}x{args.size} ({res.n_ref} ref / {res.n_pred} pred instances), "
          f"median of {args.repeats}:")
    print(f"  {'method':58s} {'seconds':>10s} {'ratio':>10s}")
    for k, t in full.items():
        rows.append({"map": "full", "method": f"scribmed {k}", "seconds": t, "ratio_to_evaluate_instance_case": t / base})
        print(f"  {'scribmed ' + k:58s} {t:10.4f} {_ratio(t / base):>10s}")
    for name, t, note in (("naive per-instance loop (table + metrics)", t_loop, loop_note),
                          ("naive all-pairs loop (table + metrics)", t_pairs_full,
                           f"EXTRAPOLATED from the {side}x{side} crop's cost per pair and pixel")):
        rows.append({"map": "full", "method": name, "seconds": t, "ratio_to_evaluate_instance_case": t / base,
                     "note": note})
        print(f"  {name:58s} {t:10.2f} {_ratio(t / base):>10s}  ({note})")

    cbase = crop["evaluate_instance_case (all metrics)"]
    print(f"\ncrop {side}x{side} ({crop_res.n_ref} ref / {crop_res.n_pred} pred instances, {crop_pairs} pairs), "
          "all measured:")
    for name, t in (("scribmed evaluate_instance_case (all metrics)", cbase),
                    ("scribmed overlap_table", crop["overlap_table"]),
                    ("naive per-instance loop (table + metrics)", t_loop_crop),
                    ("naive all-pairs loop (table + metrics)", t_pairs)):
        rows.append({"map": "crop", "method": name, "seconds": t, "ratio_to_evaluate_instance_case": t / cbase})
        print(f"  {name:58s} {t:10.4f} {_ratio(t / cbase):>10s}")
    crop_loop_diff = check(crop_res, naive_scores(inter_l, pa_l, ra_l))
    diffs = [d for d in (loop_diff, pairs_diff, crop_loop_diff) if d is not None]
    worst = max(diffs)
    print(f"\nmax |scribmed - naive| over DSB, F1, AJI, PQ: {worst:.3g} ({'OK' if worst <= 1e-12 else 'MISMATCH'})")

    result = {
        "benchmark": "instance_metrics_speed",
        "map": {"size": args.size, "cells": args.cells, "seed": args.seed, **info,
                "n_ref": res.n_ref, "n_pred": res.n_pred},
        "scores": {k: getattr(res, k) for k in ("dsb_score", "f1", "aji", "aji_plus", "pq", "sq", "rq", "dice")},
        "crop": {"side": side, "n_ref": crop_res.n_ref, "n_pred": crop_res.n_pred, "pairs": crop_pairs},
        "repeats": args.repeats,
        "rows": rows,
        "max_abs_diff_vs_naive": worst,
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "notes": f"naive per-instance loop: {loop_note}; naive all-pairs loop on the full map extrapolated "
                 f"from the {side}x{side} crop (it would take hours).",
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
