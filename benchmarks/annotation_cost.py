"""Dice vs annotation cost on one real ACDC fold: the same segmentor from every kind of supervision.

One command trains, on fold ``--fold`` of ``data_splits/acdc_5fold.json`` (test = that fold's
patients, all their volumes; checkpoint selected by Dice on the fold's validation patients, never
the test patients), at one CPU budget (``--iterations``, batch 12, 256x256, seed 0, the poly
schedule of ``--lr-horizon``):

================  =====================================================================
configuration     supervision of the training patients (assigned per patient, seed 0)
================  =====================================================================
dmpls_scribble    DMPLS (dual-branch U-Net, scribbles only): the scribble baseline
scribble          mixsup, scribbles only (the real ACDC scribbles)
box               mixsup, boxes only (simulated from the labels, 3-7 px jitter)
point             mixsup, points only (5 per class per slice, centre-weighted, simulated)
full10_scribble90 mixsup, 10 % full masks + 90 % scribbles
mix4              mixsup, 10 % full + 30 % box + 30 % point + 30 % scribble
full              mixsup, full masks only: the ceiling
================  =====================================================================

Every mixsup run uses the same segmentor (DMPLS's network and schedule with SeSAM's objective)
and LiteMedSAM pseudo labels from each case's own weak label (``--rounds`` decoder fine-tuning
rounds; 0 = zero-shot, the CPU default here). All runs share one SAM embedding cache. Each
configuration is a ``scribmed cv`` run directory under ``--out``; finished ones are skipped, so a
killed sweep resumes.

Annotation cost of a configuration = the seconds to draw the weak labels of its training cases,
counted from the labels actually used (:data:`COST_SECONDS`, overridable with ``--cost``):

- full mask: 79 s per structure outline on a slice (Bearman et al., ECCV 2016, sec. 1: "providing
  an accurate outline of a single object takes between 54 s and 79 s"; the upper value);
- box: 7.0 s per box (Papadopoulos et al., ICCV 2017, extreme clicking);
- point: 2.4 s per click (Bearman et al., ECCV 2016);
- scribble: 10 s per structure stroke on a slice (an assumption: no timing of cardiac scribbles
  is published that we could check).

The validation patients are fully labelled in every configuration (checkpoint selection, as in
every scribmed recipe); their labels are not counted.

Data: ``ACDC/`` (``acdc-h5``) in the data folder, ``--data-root DIR`` or ``$SCRIBMED_DATA``.

Usage::

    python benchmarks/annotation_cost.py                         # all configurations, fold 1, 120 iterations
    python benchmarks/annotation_cost.py --configs dmpls_scribble,mix4
    python benchmarks/annotation_cost.py --table                 # table + plot of the finished runs
    python benchmarks/annotation_cost.py --merge runs/annotation_cost,runs/annotation_cost_s1 --out runs/ac_seeds

Writes ``<out>/<config>/`` (CV run directories), ``<out>/annotation_cost.{md,json,png,pdf}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data_root import add_data_root, dataset_dir  # noqa: E402

SPLIT = REPO / "data_splits" / "acdc_5fold.json"

#: configuration -> (recipe, supervision mix over the patients)
CONFIGS: dict[str, tuple[str, dict[str, float]]] = {
    "dmpls_scribble": ("dmpls", {"scribble": 1.0}),
    "mix4": ("mixsup", {"full": 0.1, "box": 0.3, "point": 0.3, "scribble": 0.3}),
    "scribble": ("mixsup", {"scribble": 1.0}),
    "full10_scribble90": ("mixsup", {"full": 0.1, "scribble": 0.9}),
    "box": ("mixsup", {"box": 1.0}),
    "point": ("mixsup", {"point": 1.0}),
    "full": ("mixsup", {"full": 1.0}),
}

#: seconds per annotation unit (see the module docstring for the sources)
COST_SECONDS = {"full": 79.0, "box": 7.0, "point": 2.4, "scribble": 10.0}
COST_UNITS = {"full": "structure outline per slice", "box": "box", "point": "click",
              "scribble": "structure stroke per slice"}


def annotation_units(case: Any, kind: str, class_map: Any) -> float:
    """How many cost units the case's ``kind`` annotation holds (see :data:`COST_UNITS`)."""
    import numpy as np

    if kind == "none":
        return 0.0
    if kind == "full":
        lab = np.asarray(case.label)
        return float(sum(int(np.any(lab[z] == k)) for z in range(lab.shape[0]) for k in class_map.foreground))
    if kind == "scribble":
        scr = np.asarray(case.scribble)
        return float(sum(int(np.any(scr[z] == k)) for z in range(scr.shape[0]) for k in (0, *class_map.foreground)))
    weak = case.weak
    if kind == "box":
        return float(sum(len(b) for per in weak.boxes.values() for b in per.values()))
    return float(sum(len(p.positive) + len(p.negative) for per in weak.points.values() for p in per.values()))


def run_config(name: str, args: argparse.Namespace) -> Path:
    import torch

    from scribmed.data.layouts import open_dataset
    from scribmed.data.supervision_assignment import apply_supervision, mix_assignment
    from scribmed.crossval.runner import run_cross_validation
    from scribmed.recipes import build

    torch.set_num_threads(args.threads)
    recipe_name, mix = CONFIGS[name]
    out = args.out / name
    options: dict[str, Any] = dict(iterations=args.iterations, batch_size=12, size=256, seed=args.seed,
                                   val_interval=min(args.val_interval, args.iterations),
                                   lr_horizon=args.lr_horizon)
    if recipe_name == "mixsup":
        options.update(rounds=args.rounds, sam_epochs=args.sam_epochs, sam_cache=args.sam_cache or args.out / "sam_embeddings")
    recipe = build(recipe_name, **options)
    dataset = open_dataset("acdc-h5", args.root)
    text = ",".join(f"{k}={v}" for k, v in mix.items())
    record = apply_supervision(dataset, mix_assignment(dataset, mix, args.seed), simulate=True, seed=args.seed,
                               source=f"mix {text} over patients, seed {args.seed}")
    run_cross_validation(recipe, dataset, args.split, out, folds=[args.fold], allow_missing=True, progress=True,
                         supervision=record)
    return out


def cost_of(name: str, args: argparse.Namespace, costs: dict[str, float]) -> dict[str, Any]:
    """Annotation seconds of the configuration's training cases (the fold's train patients)."""
    from scribmed.data.layouts import open_dataset
    from scribmed.data.split_files import load_split
    from scribmed.data.splits import fold_cases, validate_split
    from scribmed.data.supervision_assignment import apply_supervision, mix_assignment

    _, mix = CONFIGS[name]
    dataset = open_dataset("acdc-h5", args.root)
    apply_supervision(dataset, mix_assignment(dataset, mix, args.seed), simulate=True, seed=args.seed)
    report = validate_split(load_split(args.split), dataset, allow_missing=True)
    ids = fold_cases(report.split, args.fold - 1, dataset)["train"]
    units = {t: 0.0 for t in COST_SECONDS}
    cases = {t: 0 for t in (*COST_SECONDS, "none")}
    for cid in ids:
        case = dataset[cid]
        kind = case.supervision
        cases[kind] += 1
        if kind in units:
            units[kind] += annotation_units(case, kind, dataset.class_map)
        case.release()
    seconds = sum(units[t] * costs[t] for t in units)
    return {"units": units, "cases": cases, "seconds": seconds, "hours": seconds / 3600.0}


def pseudo_label_by_type(run: Path, fold: int) -> dict[str, Any]:
    """Mean over cases of the per-case mean foreground Dice of the last round's pseudo labels, by supervision type."""
    sam = run / f"fold_{fold}" / "train" / "sam"
    if not (sam / "quality.json").exists() or not (sam / "run.json").exists():
        return {}
    last = json.loads((sam / "quality.json").read_text())["rounds"][-1]
    kinds = json.loads((sam / "run.json").read_text()).get("supervision") or {}
    groups: dict[str, list[float]] = {}
    for cid, per_class in last["per_case"].items():
        values = [v for v in per_class.values() if v is not None]
        if cid in kinds and values:
            groups.setdefault(kinds[cid], []).append(sum(values) / len(values))
    return {k: {"dice": sum(v) / len(v), "cases": len(v)} for k, v in sorted(groups.items())}


def collect(args: argparse.Namespace, costs: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for name in CONFIGS:
        run = args.out / name
        summary = run / f"fold_{args.fold}" / "evaluation" / "summary.json"
        if not summary.exists():
            continue
        s = json.loads(summary.read_text())
        fold = json.loads((run / f"fold_{args.fold}" / "fold.json").read_text())
        cost_file = run / "annotation_cost.json"
        if cost_file.exists() and json.loads(cost_file.read_text()).get("cost_seconds") == costs:
            cost = json.loads(cost_file.read_text())["cost"]
        else:
            cost = cost_of(name, args, costs)
            cost_file.write_text(json.dumps({"cost_seconds": costs, "cost": cost}, indent=1))
        row = {"config": name, "recipe": CONFIGS[name][0], "mix": CONFIGS[name][1], "seed": args.seed,
               "n_cases": s["n_cases"],
               **{c: e["dice"]["mean"] for c, e in s["classes"].items()},
               "mean": s["overall"]["dice"], "hd95": s["overall"]["hd95"], "hd95_units": s.get("hd95_units"),
               "checkpoint": f"{fold['checkpoint_policy']}@{fold.get('best_iteration')}",
               "pseudo_label_dice": fold.get("pseudo_label_dice"),
               "pseudo_label_by_type": pseudo_label_by_type(run, args.fold), "annotation": cost}
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], args: argparse.Namespace, costs: dict[str, float]) -> str:
    lines = [
        f"Real ACDC fold {args.fold} ({rows[0]['n_cases'] if rows else 0} test volumes), {args.iterations} iterations, "
        f"batch 12, 256x256, seed {args.seed}, lr horizon {args.lr_horizon}, SAM rounds {args.rounds}.",
        "",
        "| configuration | recipe | supervision (train patients) | annotation (h) | RV | Myo | LV | mean Dice | "
        f"mean HD95 ({rows[0].get('hd95_units', '?') if rows else '?'}) | SAM pseudo-label Dice (train, by type) | "
        "checkpoint |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sup = ", ".join(f"{t} {n}" for t, n in r["annotation"]["cases"].items() if n)
        by_type = r.get("pseudo_label_by_type") or {}
        pl_text = ", ".join(f"{t} {e['dice']:.3f}" for t, e in by_type.items()) or "-"
        hd = "n/a" if r["hd95"] is None else f"{r['hd95']:.2f}"
        lines.append(f"| {r['config']} | {r['recipe']} | {sup} | {r['annotation']['hours']:.2f} | {r['RV']:.3f} | "
                     f"{r['Myo']:.3f} | {r['LV']:.3f} | **{r['mean']:.3f}** | {hd} | {pl_text} | {r['checkpoint']} |")
    lines += ["", "Cost model (seconds per unit): " + ", ".join(
        f"{t} {costs[t]:g} s per {COST_UNITS[t]}" for t in COST_SECONDS) + "; sources in benchmarks/annotation_cost.py."]
    return "\n".join(lines) + "\n"


#: configuration -> what a reader calls it (legend and table)
LABELS = {
    "dmpls_scribble": "DMPLS, scribbles",
    "scribble": "scribbles",
    "box": "boxes",
    "point": "points",
    "full10_scribble90": "10 % full masks + 90 % scribbles",
    "mix4": "10 % full masks + 30 % boxes + 30 % points + 30 % scribbles",
    "full": "full masks",
}
MARKERS = {"dmpls_scribble": "s", "scribble": "o", "box": "D", "point": "^", "full10_scribble90": "v",
           "mix4": "P", "full": "*"}


def by_config(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows of one or more seeds grouped by configuration: hours, mean Dice over the seeds, min and max."""
    import numpy as np

    grouped: dict[str, dict[str, Any]] = {}
    for r in rows:
        g = grouped.setdefault(r["config"], {"recipe": r["recipe"], "hours": [], "dice": [], "seeds": []})
        g["hours"].append(r["annotation"]["hours"])
        g["dice"].append(r["mean"])
        g["seeds"].append(r.get("seed", 0))
    for g in grouped.values():
        g["mean_hours"] = float(np.mean(g["hours"]))
        g["mean_dice"], g["min_dice"], g["max_dice"] = (float(np.mean(g["dice"])), float(min(g["dice"])),
                                                        float(max(g["dice"])))
    return grouped


def make_plot_figure(rows: list[dict[str, Any]], title: str, note: str | None = None) -> Any:
    """Mean test Dice against annotation hours (log scale): one marker per configuration, named in the
    legend; with several seeds the marker is their mean and the bar spans their lowest and highest."""
    import textwrap

    import matplotlib.ticker

    from scribmed.runtime.figures import CLASS_COLOURS, new_figure, set_title

    fig = new_figure((9.6, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, g) in enumerate(by_config(rows).items()):
        n = len(g["dice"])
        label = "\n".join(textwrap.wrap(LABELS.get(name, name), 38))
        label += f" ({'DMPLS' if g['recipe'] == 'dmpls' else 'SeSAM objective'}"
        label += f", {n} seeds)" if n > 1 else ", 1 seed)"
        colour = CLASS_COLOURS[i % len(CLASS_COLOURS)]
        err = [[g["mean_dice"] - g["min_dice"]], [g["max_dice"] - g["mean_dice"]]] if n > 1 else None
        ax.errorbar(g["mean_hours"], g["mean_dice"], yerr=err, fmt=MARKERS.get(name, "o"), color=colour,
                    markersize=8 if name != "full" else 11, capsize=4, label=label)
    ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("annotation time of the training patients (hours, log scale)")
    ax.set_ylabel("mean test Dice (RV, Myo, LV)")
    ax.set_ylim(0.0, max(0.5, ax.get_ylim()[1]))
    set_title(ax, title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="training supervision\n(segmentor loss, seeds)",
              title_fontsize=7, frameon=False)
    if note:
        ax.text(0.0, -0.16, "\n".join(textwrap.wrap(note, 100)), transform=ax.transAxes, fontsize=7, ha="left",
                va="top")
    return fig


def plot(rows: list[dict[str, Any]], path: Path, title: str, note: str | None = None) -> None:
    """``annotation_cost.png`` and ``annotation_cost.pdf`` beside it (plus any other format of
    :func:`scribmed.runtime.figures.figure_formats`)."""
    from scribmed.runtime.figures import figure_formats, save_figure

    save_figure(make_plot_figure(rows, title, note), path.with_suffix(".png"), (*figure_formats(), "pdf"), dpi=150)


def _costs(text: str | None) -> dict[str, float]:
    costs = dict(COST_SECONDS)
    for part in (text or "").split(","):
        if part.strip():
            k, _, v = part.partition("=")
            if k.strip() not in costs:
                raise SystemExit(f"error: --cost: unknown type {k!r} (known: {', '.join(costs)})")
            costs[k.strip()] = float(v)
    return costs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    add_data_root(ap, ("ACDC",))
    ap.add_argument("--split", type=Path, default=SPLIT)
    ap.add_argument("--fold", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=120)
    ap.add_argument("--val-interval", dest="val_interval", type=int, default=40)
    ap.add_argument("--lr-horizon", dest="lr_horizon", type=int, default=60000,
                    help="poly schedule length (default 60000: the paper's schedule, as the DMPLS parity runs)")
    ap.add_argument("--rounds", type=int, default=0, help="SAM decoder fine-tuning rounds (default 0: zero-shot)")
    ap.add_argument("--sam-epochs", dest="sam_epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cost", help="override seconds per unit, e.g. full=60,scribble=15")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "annotation_cost")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sam-cache", dest="sam_cache", type=Path,
                    help="SAM embedding cache (default OUT/sam_embeddings; share it between sweeps: it never changes results)")
    ap.add_argument("--table", action="store_true", help="only write the table and plot of finished runs")
    ap.add_argument("--merge", metavar="DIR,DIR",
                    help="plot the rows of several finished sweeps (one seed each, their annotation_cost.json) into "
                    "--out as one figure: the mean over the seeds with a bar from the lowest to the highest")
    ap.add_argument("--note", help="a line printed under the plot (e.g. why a point is not what it seems)")
    args = ap.parse_args()
    if args.merge:
        rows = [r for d in args.merge.split(",") if d.strip()
                for r in json.loads((Path(d.strip()) / "annotation_cost.json").read_text())["rows"]]
        args.out.mkdir(parents=True, exist_ok=True)
        seeds = sorted({r.get("seed", 0) for r in rows})
        plot(rows, args.out / "annotation_cost.png", f"ACDC fold {args.fold}, {args.iterations} iterations, "
             f"seeds {', '.join(map(str, seeds))}: Dice vs annotation cost", args.note)
        print(f"plot: {args.out / 'annotation_cost.png'}")
        return 0
    args.root = dataset_dir(args, "ACDC")
    costs = _costs(args.cost)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        print(f"error: unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        for name in names:
            print(f"== {name}", flush=True)
            run_config(name, args)
    rows = collect(args, costs)
    text = table(rows, args, costs)
    (args.out / "annotation_cost.md").write_text(text)
    (args.out / "annotation_cost.json").write_text(json.dumps({"rows": rows, "cost_seconds": costs,
                                                               "cost_units": COST_UNITS}, indent=1))
    if rows:
        plot(rows, args.out / "annotation_cost.png",
             f"ACDC fold {args.fold}, {args.iterations} iterations, seed {args.seed}: Dice vs annotation cost",
             args.note)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
