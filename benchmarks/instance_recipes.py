"""The instance recipes on real DSB2018 nuclei at one CPU budget, against the same segmentor's ceiling and floor.

One command trains, on fold ``--fold`` of ``data_splits/dsb2018_5fold.json`` (10 test images; the
checkpoint is selected by DSB score on the fold's 4 validation images, never the test images),
every configuration below with the same contour U-Net, schedule (``--iterations``, batch 8, 128 px
crops, AdamW, seed 0) and checkpoint rule:

==========  ===========================================================================
config      training signal on the fold's 36 training images
==========  ===========================================================================
ceiling     contour_unet, full instance masks (the same segmentor fully supervised)
floor       contour_unet, one point per nucleus alone (discs + Voronoi background), no SAM
sesam       sesam: the same points + LiteMedSAM pseudo labels (SeSAM selection) + EMA teacher
s4m         s4m: 25 % of the images fully labelled, the rest unlabeled; teacher -> SAM
            refinement -> ARP -> student with structural distillation
wish        wish: per image a tag (count), points or boxes (34 / 33 / 33 %), min-over-3 SAM cost
==========  ===========================================================================

Weak labels are simulated from the instance masks (seeded, the recipes' defaults). All SAM runs
share one embedding cache. Each configuration is a ``scribmed cv`` run directory under ``--out``;
finished ones are skipped, so a killed sweep resumes. Data: ``DSB2018/`` (``dsb2018``) in the data
folder, ``--data-root DIR`` or ``$SCRIBMED_DATA`` (``--table`` reads only the finished runs).

Usage::

    python benchmarks/instance_recipes.py                      # all configs, fold 1, 600 iterations
    python benchmarks/instance_recipes.py --configs floor,sesam
    python benchmarks/instance_recipes.py --table              # table of the finished runs only

Writes ``<out>/<config>/`` and ``<out>/instance_recipes.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data_root import add_data_root, dataset_dir  # noqa: E402

CONFIGS: dict[str, tuple[str, list[str]]] = {
    "ceiling": ("contour_unet", ["--set", "weak=full"]),
    "floor": ("contour_unet", ["--set", "weak=point"]),
    "sesam": ("sesam", []),
    "s4m": ("s4m", []),
    "wish": ("wish", []),
}
METRICS = (("dsb_score", "DSB score"), ("f1", "F1@0.5"), ("aji", "AJI"), ("pq", "PQ"), ("dice", "Dice"))


def run_config(name: str, args: argparse.Namespace) -> Path:
    from scribmed.cli import main

    recipe, extra = CONFIGS[name]
    out = args.out / name
    argv = ["cv", "--recipe", recipe, "--layout", "dsb2018", "--root", str(args.root),
            "--split", str(REPO / "data_splits" / "dsb2018_5fold.json"), "--fold", str(args.fold),
            "--out", str(out), "--iterations", str(args.iterations), "--val-interval", str(args.val_interval),
            "--seed", str(args.seed), "--device", args.device, *extra]
    if recipe != "contour_unet":
        argv += ["--set", f"sam_cache={args.out / 'sam_embeddings'}"]
    t0 = time.time()
    if main(argv) != 0:
        raise SystemExit(f"{name}: scribmed cv failed")
    (out / "wall_seconds.txt").write_text(f"{time.time() - t0:.0f}\n")
    return out


def collect(args: argparse.Namespace) -> list[dict]:
    rows = []
    for name in CONFIGS:
        summary = args.out / name / "summary.json"
        if not summary.exists():
            continue
        s = json.loads(summary.read_text())
        fold = s["folds"][f"fold_{args.fold}"]
        row = {"config": name, "recipe": CONFIGS[name][0],
               **{m: fold["metrics"][m]["mean"] for m, _ in METRICS if m in fold.get("metrics", {})}}
        q = args.out / name / f"fold_{args.fold}" / "train" / "sam" / "quality.json"
        if q.exists():
            mean = json.loads(q.read_text())["mean"]
            row["pseudo_dsb_score"] = mean.get("dsb_score", mean.get("refined_dsb_score"))
        wall = args.out / name / "wall_seconds.txt"
        if wall.exists():
            row["wall_seconds"] = float(wall.read_text())
        rows.append(row)
    return rows


def write_table(rows: list[dict], args: argparse.Namespace) -> str:
    head = "| config | recipe | " + " | ".join(t for _, t in METRICS) + " | pseudo-label DSB | wall |"
    lines = [f"DSB2018 fold {args.fold} (10 test images), {args.iterations} iterations, seed {args.seed}; "
             "mean over the test images.", "", head, "|" + "---|" * (len(METRICS) + 4)]
    for r in rows:
        cells = [f"{r[m]:.3f}" if m in r else "-" for m, _ in METRICS]
        pl = f"{r['pseudo_dsb_score']:.3f}" if r.get("pseudo_dsb_score") is not None else "-"
        wall = f"{r['wall_seconds'] / 60:.0f} min" if "wall_seconds" in r else "-"
        lines.append(f"| {r['config']} | {r['recipe']} | " + " | ".join(cells) + f" | {pl} | {wall} |")
    table = "\n".join(lines) + "\n"
    (args.out / "instance_recipes.md").write_text(table)
    (args.out / "instance_recipes.json").write_text(json.dumps(
        {"fold": args.fold, "iterations": args.iterations, "seed": args.seed, "rows": rows,
         "command": "python benchmarks/instance_recipes.py " + " ".join(sys.argv[1:])}, indent=2))
    if rows:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.5, 3.2), constrained_layout=True)
        ax = fig.add_subplot(1, 1, 1)
        ax.bar([r["config"] for r in rows], [r.get("dsb_score", 0) for r in rows], color="#0072B2")
        ax.set_ylabel("DSB score (test)")
        ax.set_title(f"DSB2018 fold {args.fold}, {args.iterations} iterations", fontsize=10)
        fig.savefig(args.out / "instance_recipes.png", dpi=120)
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_root(ap, ("DSB2018",))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--fold", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--val-interval", dest="val_interval", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "instance_recipes")
    ap.add_argument("--table", action="store_true", help="only tabulate finished runs")
    args = ap.parse_args(argv)
    args.root = None if args.table else dataset_dir(args, "DSB2018")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        for name in [c for c in args.configs.split(",") if c]:
            if name not in CONFIGS:
                raise SystemExit(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
            run_config(name, args)
    print(write_table(collect(args), args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
