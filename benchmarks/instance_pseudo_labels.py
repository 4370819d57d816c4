"""SAM pseudo-label quality on DSB2018 nuclei: SeSAM's coverage/compatibility selection vs SAM's best score.

For every image, every nucleus gets prompts from its simulated weak label (seeded, as the
recipes draw them): its point(s), or K = 5 points drawn by SeSAM's skeleton-grid sampler from its
stroke / coarse mask, plus (unless ``--no-box``) the box of its clipped Voronoi cell
(:mod:`scribmed.transforms.point_cells`). A point's weak region W is its cell; a stroke's or a
coarse mask's W is its own pixels. SAM (LiteMedSAM by default) answers each nucleus with three candidate
masks; the **same prompts and the same candidates** are then reduced to one mask per nucleus by

* ``sesam``: SeSAM's rule (coverage |S∩W|/|W| >= 0.3 and compatibility |S∩W|/|S| >= 0.7
  against the nucleus's weak region W, the most compatible; else the most compatible overall),
* ``score``: SAM's own choice, the highest predicted IoU,
* ``random``: a seeded uniform choice (a reference point),

and the chosen masks become a pseudo instance map (overlaps: higher predicted IoU wins). Each map
is scored against the reference instance map with the DSB2018 score, AJI, F1@0.5 and foreground
Dice (mean over images). No model is trained or selected here, so all images can be used; the
default is all 50. Data: ``DSB2018/`` (``dsb2018``) in the data folder, ``--data-root DIR`` or
``$SCRIBMED_DATA``.

Usage::

    python benchmarks/instance_pseudo_labels.py                    # all 50 images, 4 weak kinds
    python benchmarks/instance_pseudo_labels.py --images 10 --kinds point
    python benchmarks/instance_pseudo_labels.py --no-box            # points alone (LiteMedSAM: near useless)

Writes ``<out>/instance_pseudo_labels.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data_root import add_data_root, dataset_dir  # noqa: E402
from scribmed.data.instance_weak_simulation import make_instance_weak  # noqa: E402
from scribmed.data.layouts import open_dataset  # noqa: E402
from scribmed.metrics.instance import aji, dsb_score, f1  # noqa: E402
from scribmed.recipes.sesam.recipe import instance_prompts  # noqa: E402
from scribmed.sam.instance_prompting import masks_to_instances  # noqa: E402
from scribmed.sam.instance_stage import InstanceSamConfig, InstanceSamStage  # noqa: E402
from scribmed.sam.mask_selection import select_masks  # noqa: E402

RULES = ("sesam", "score", "random")
KINDS = {
    "point": dict(kind="point", points_per_instance=1, point_mode="center"),
    "point3": dict(kind="point", points_per_instance=3, point_mode="random"),
    "scribble": dict(kind="scribble"),
    "coarse": dict(kind="coarse"),
}
CHUNK = 32


def score(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    p, r = pred > 0, ref > 0
    d = p.sum() + r.sum()
    return {"dsb_score": dsb_score(pred, ref), "aji": aji(pred, ref), "f1": f1(pred, ref),
            "dice": 1.0 if d == 0 else float(2 * (p & r).sum() / d)}


def pseudo_maps(stage: InstanceSamStage, case, weak, seed: int, prompt_box: bool) -> dict[str, np.ndarray]:
    """The pseudo instance map of each rule from the same prompts and SAM candidates."""
    from scribmed.sam.instance_prompting import prompt_instances

    hw = tuple(int(s) for s in weak.shape)
    rng = np.random.default_rng([seed, 0x5E5A, *[ord(c) for c in case.case_id[:16]]])
    coords, labels, ids, regions, boxes = instance_prompts(weak, 5, rng, prompt_box=prompt_box)
    if len(ids) == 0:
        return {r: np.zeros(hw, np.int32) for r in RULES}
    emb = stage.embedding(case)
    chosen = {r: [] for r in RULES}
    scores = {r: [] for r in RULES}
    for lo in range(0, len(ids), CHUNK):
        sl = slice(lo, lo + CHUNK)
        res = prompt_instances(stage.backend, emb, hw, point_coords=coords[sl], point_labels=labels[sl],
                               boxes=None if boxes is None else boxes[sl], regions=regions[sl], rule="score")
        logits, iou = np.asarray(res.candidates), np.asarray(res.iou)
        for rule in RULES:
            sel = select_masks(logits, regions[sl], iou, rule=rule, seed=seed)
            idx = np.asarray(sel.index)
            chosen[rule].append(logits[np.arange(len(idx)), idx] > 0)
            scores[rule].append(iou[np.arange(len(idx)), idx])
    return {r: masks_to_instances(np.concatenate(chosen[r]), np.concatenate(scores[r]), min_size=5) for r in RULES}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_root(ap, ("DSB2018",))
    ap.add_argument("--images", type=int, default=0, help="first N images (0: all)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"weak kinds, from {', '.join(KINDS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-box", dest="no_box", action="store_true",
                    help="points only (no clipped-Voronoi-cell box prompts)")
    ap.add_argument("--backend", default="lite_medsam")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--cache", type=Path, default=REPO / "runs" / "bench" / "dsb_sam_embeddings")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench")
    args = ap.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    ds = open_dataset("dsb2018", dataset_dir(args, "DSB2018"))
    cases = list(ds)[: args.images or None]
    stage = InstanceSamStage(InstanceSamConfig(args.backend, args.checkpoint, str(args.cache), "cpu"))
    per = {k: {r: [] for r in RULES} for k in kinds}
    t0 = time.time()
    from tqdm.auto import tqdm

    for case in tqdm(cases, desc="images", unit="image"):
        inst = np.asarray(case.instance)[0]
        for kind in kinds:
            weak = make_instance_weak(inst, seed=args.seed, key=case.case_id, **KINDS[kind])
            for rule, pred in pseudo_maps(stage, case, weak, args.seed, not args.no_box).items():
                per[kind][rule].append(score(pred, inst))
        case.release()
    rows = []
    for kind in kinds:
        for rule in RULES:
            vals = per[kind][rule]
            rows.append({"weak": kind, "rule": rule, "images": len(vals),
                         **{m: float(np.mean([v[m] for v in vals])) for m in ("dsb_score", "aji", "f1", "dice")}})
    prompts = "points only" if args.no_box else "points + clipped-Voronoi-cell boxes"
    lines = [f"SAM pseudo labels on DSB2018 ({len(cases)} images, {args.backend}, seed {args.seed}, {prompts}); "
             "same prompts and candidates per row group.", "",
             "| weak label | selection | DSB score | AJI | F1@0.5 | Dice |", "|---|---|---|---|---|---|"]
    for r in rows:
        best = max((x for x in rows if x["weak"] == r["weak"]), key=lambda x: x["dsb_score"])
        mark = "**" if r is best else ""
        lines.append(f"| {r['weak']} | {r['rule']} | {mark}{r['dsb_score']:.3f}{mark} | {r['aji']:.3f} | "
                     f"{r['f1']:.3f} | {r['dice']:.3f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "instance_pseudo_labels.md").write_text(table)
    (args.out / "instance_pseudo_labels.json").write_text(json.dumps(
        {"images": [c.case_id for c in cases], "backend": args.backend, "seed": args.seed, "prompts": prompts,
         "rows": rows,
         "seconds": time.time() - t0,
         "command": "python benchmarks/instance_pseudo_labels.py " + " ".join(argv or sys.argv[1:])}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
