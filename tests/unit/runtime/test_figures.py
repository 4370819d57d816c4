"""Every figure scribmed writes: nothing clipped, one colour-blind-safe palette, PNG + optional PDF.

Each figure type is rendered from tiny synthetic inputs through its ``make_*_figure`` function and
checked with :func:`scribmed.runtime.figures.text_outside_canvas`; the writers are checked for the
files they leave (PNG always, PDF beside it only when asked). Overlays: tests/evaluation/
test_overlays_figures.py.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pytest

from scribmed.metrics import CaseResult, ClassResult, InstanceCaseResult
from scribmed.runtime import figures as F
from scribmed.evaluation.instance_report import (
    INSTANCE_METRICS,
    make_instance_boxplot_figure,
    plot_instance_fold_boxplots,
    write_instance_report,
)
from scribmed.evaluation.report import (
    make_boxplot_figure,
    make_fold_boxplot_figure,
    plot_boxplots,
    plot_fold_boxplots,
    write_report,
)

REPO = Path(__file__).resolve().parents[3]
CARDIAC = ((1, "RV"), (2, "Myo"), (3, "LV"))
ABDOMINAL = ((1, "liver"), (2, "right_kidney"), (3, "left_kidney"), (4, "spleen"))


def _case(cid: str, dice: float, classes=CARDIAC, units: str = "mm") -> CaseResult:
    recs = tuple(ClassResult(i, n, dice, 10 * (1 - dice), 1.0, None, False) for i, n in classes)
    return CaseResult(cid, recs, units, "medpy", "nan_counted")


def _folds(n_folds: int, classes=CARDIAC, prefix: str = "fold_") -> dict[str, list[CaseResult]]:
    return {f"{prefix}{k}": [_case(f"c{k}{i}", 0.5 + 0.1 * i, classes) for i in range(3)] for k in range(1, n_folds + 1)}


def _inst(cid: str, score: float) -> InstanceCaseResult:
    return InstanceCaseResult(cid, 3, 3, *([score] * len(INSTANCE_METRICS)))


def _hex(colour) -> str:
    from matplotlib.colors import to_hex

    return to_hex(colour, keep_alpha=False).upper()


def _box_colours(fig) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for ax in fig.axes:
        for patch in ax.patches:
            if patch.get_gid():
                out.setdefault(patch.get_gid(), set()).add(_hex(patch.get_facecolor()))
    return out


# --------------------------------------------------------------------------------------------
# palette
# --------------------------------------------------------------------------------------------


def test_palette_is_okabe_ito():
    assert F.OKABE_ITO == {
        "black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "bluish_green": "#009E73",
        "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish_purple": "#CC79A7",
    }
    okabe = set(F.OKABE_ITO.values())
    assert set(F.CLASS_COLOURS) <= okabe and len(set(F.CLASS_COLOURS)) == len(F.CLASS_COLOURS) == 7
    assert F.OKABE_ITO["black"] not in F.CLASS_COLOURS  # black is for lines and text
    assert F.class_colour(0) is None  # background is never drawn
    assert [F.class_colour(k) for k in (1, 2, 3)] == ["#0072B2", "#E69F00", "#CC79A7"]
    assert all(F.class_colour(k) == F.class_colour(k + 7) for k in range(1, 8))  # cycles, same index same colour
    assert {F.palette_colour(i) for i in range(12)} <= okabe - {F.OKABE_ITO["black"], F.OKABE_ITO["yellow"]}
    with pytest.raises(ValueError):
        F.class_colour(-1)


def test_label_rgba_colours_and_transparency():
    labels = np.array([[0, 1, 2], [3, 4, 0]])
    rgba = F.label_rgba(labels)
    assert rgba[0, 0, 3] == 0 and rgba[1, 2, 3] == 0  # background transparent
    for (y, x) in ((0, 1), (0, 2), (1, 0), (1, 1)):
        assert _hex(rgba[y, x, :3]) == F.class_colour(int(labels[y, x]))
        assert rgba[y, x, 3] == pytest.approx(0.55)
    scribble = F.label_rgba(np.array([[4, 0, 1]]), ignore=4)
    assert scribble[0, 0, 3] == 0  # unlabeled
    assert _hex(scribble[0, 1, :3]) == F.BACKGROUND_SCRIBBLE_COLOUR.upper() and scribble[0, 1, 3] == 1.0
    assert _hex(scribble[0, 2, :3]) == F.class_colour(1)


def test_box_plots_colour_classes_like_everywhere_else():
    for fig in (make_boxplot_figure(_folds(1)["fold_1"]), make_fold_boxplot_figure(_folds(3))):
        colours = _box_colours(fig)
        assert colours == {f"class_{k}": {F.class_colour(k)} for k, _ in CARDIAC}
    # class 3 keeps its colour when the dataset has other classes
    colours = _box_colours(make_boxplot_figure([_case("a", 0.7, ABDOMINAL)]))
    assert colours["class_3"] == {F.class_colour(3)} and colours["class_4"] == {F.class_colour(4)}


# --------------------------------------------------------------------------------------------
# nothing clipped
# --------------------------------------------------------------------------------------------


def test_text_outside_canvas_finds_clipped_text_and_ignores_hidden_text():
    fig = F.new_figure((4, 3))
    fig.set_layout_engine(None)  # matplotlib's default margins hold this figure's tick labels
    ax = fig.add_subplot(1, 1, 1)
    fig.suptitle("a title far too long to fit into a figure only four inches wide, it runs off both sides")
    ax.annotate("off the right edge", (1.0, 0.5), xycoords="axes fraction", xytext=(60, 0),
                textcoords="offset points", annotation_clip=False)
    ax.set_title("")  # empty texts are not drawn
    assert sorted(F.text_outside_canvas(fig)) == [
        "a title far too long to fit into a figure only four inches wide, it runs off both sides",
        "off the right edge",
    ]
    hidden = F.new_figure((3, 2))
    ax = hidden.add_subplot(1, 1, 1)
    ax.set_xticks([0, 1], ["a very long hidden tick label that would run off", "b"])
    ax.axis("off")  # switched-off axes draw no tick labels
    hidden.text(1.5, 0.5, "invisible", visible=False)
    assert F.text_outside_canvas(hidden) == []
    short = F.new_figure((3, 2))
    short.set_layout_engine(None)
    short.add_subplot(1, 1, 1)
    assert "0.0" in F.text_outside_canvas(short)  # a 2-inch-high figure cuts its x tick labels by 1.6 px


def test_wrap_text_fits_the_width_and_keeps_short_titles():
    fig = F.new_figure((4, 3))
    assert F.wrap_text(fig, "short") == "short"
    long = "per class, one box per fold (fold_1, fold_2, fold_3, fold_4, fold_5); HD95 medpy, mm"
    wrapped = F.wrap_text(fig, long, 12)
    assert wrapped.replace("\n", " ") == long and wrapped.count("\n") >= 1
    text = fig.suptitle(wrapped, fontsize=12)
    assert F.text_outside_canvas(fig) == []
    assert text.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width


def test_the_fold_box_plot_title_that_was_clipped_now_fits():
    """One fold and three classes: the title ran off both sides ("…er class, one box per fold (fold_1); HD95 medp…")."""
    fig = make_fold_boxplot_figure(_folds(1))
    title = fig.get_suptitle()
    assert "fold_1" in title and "HD95 medpy" in title
    assert F.text_outside_canvas(fig) == []


@pytest.mark.parametrize("n_folds", [1, 2, 5])
@pytest.mark.parametrize("classes", [CARDIAC[:1], CARDIAC, ABDOMINAL])
def test_fold_box_plots_fit(n_folds, classes):
    assert F.text_outside_canvas(make_fold_boxplot_figure(_folds(n_folds, classes))) == []


def test_box_plots_fit_with_long_names_and_titles():
    long_folds = _folds(5, ABDOMINAL, prefix="a_rather_long_fold_name_")
    assert F.text_outside_canvas(make_fold_boxplot_figure(long_folds)) == []
    title = "a user title that is much longer than the figure is wide, " * 4
    assert F.text_outside_canvas(make_boxplot_figure(_folds(1, CARDIAC[:1])["fold_1"], title)) == []
    assert F.text_outside_canvas(make_boxplot_figure(_folds(1, ABDOMINAL)["fold_1"])) == []


def test_instance_box_plots_fit():
    one = {"all": [_inst("a", 0.3), _inst("b", 0.7)]}
    many = {str(k): [_inst(f"{k}a", 0.2 + 0.1 * k), _inst(f"{k}b", 0.5)] for k in range(5)}
    for folds in (one, many):
        fig = make_instance_boxplot_figure(folds)
        assert F.text_outside_canvas(fig) == []
    assert _box_colours(make_instance_boxplot_figure(many))["fold_0"] == {F.palette_colour(0)}
    assert F.text_outside_canvas(make_instance_boxplot_figure(one, "a long title " * 12)) == []


def test_training_curves_fit():
    from scribmed.training.training_curve import make_training_curve_figure

    terms = ["pce", "dice", "alpha_weighted_mixed_pseudo_label_dice", "semantic_alignment", "distill"]
    epochs = [{"iteration": 10 * i, "loss": 1 / (i + 1), **{t: 0.5 / (i + 1) for t in terms},
               "val_mean_dice": min(1.0, 0.2 * i) if i % 2 else None} for i in range(6)]
    history = {"recipe": "samsp", "loss_terms": terms, "epochs": epochs}
    assert F.text_outside_canvas(make_training_curve_figure(history)) == []
    dsb = {"recipe": "instance_sam", "loss_terms": ["ce"], "epochs": [{**e, "val_dsb_score": 0.4} for e in epochs]}
    assert F.text_outside_canvas(make_training_curve_figure(dsb, "val_dsb_score", "validation DSB score")) == []
    assert make_training_curve_figure({"epochs": []}) is None


def test_annotation_cost_plot_fits(tmp_path):
    spec = importlib.util.spec_from_file_location("annotation_cost", REPO / "benchmarks" / "annotation_cost.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = [{"config": name, "recipe": "dmpls" if name == "dmpls_scribble" else "mixsup",
             "annotation": {"hours": hours}, "mean": dice}
            for name, hours, dice in (("dmpls_scribble", 3.1, 0.61), ("full", 95.0, 0.9), ("point", 0.8, 0.55),
                                      ("full10_scribble90", 12.0, 0.86), ("mix4", 20.0, 0.7))]
    rows.append({"config": "mix4", "recipe": "mixsup", "seed": 1, "annotation": {"hours": 22.0}, "mean": 0.5})
    title = "ACDC fold 1, 120 iterations: Dice vs annotation cost"
    fig = mod.make_plot_figure(rows, title, "a note under the plot about the full-mask point")
    assert F.text_outside_canvas(fig) == []
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(legend) == 5 and not any(name in " ".join(legend) for name in ("mix4", "full10_scribble90", "dmpls_"))
    assert "(SeSAM objective, 2 seeds)" in " ".join(legend) and "full masks (SeSAM objective, 1 seed)" in legend
    grouped = mod.by_config(rows)["mix4"]  # the marker is the seeds' mean, the bar their range
    assert grouped["mean_dice"] == pytest.approx(0.6) and (grouped["min_dice"], grouped["max_dice"]) == (0.5, 0.7)
    mod.plot(rows, tmp_path / "annotation_cost.png", title)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotation_cost.pdf", "annotation_cost.png"]


# --------------------------------------------------------------------------------------------
# formats
# --------------------------------------------------------------------------------------------


def test_formats_parse_set_and_environment(monkeypatch):
    assert F.figure_formats() == ("png",)
    assert F.parse_figure_formats("PNG, .pdf,pdf") == ("png", "pdf")
    assert F.parse_figure_formats(["pdf"]) == ("png", "pdf")  # the PNG is always written
    assert F.parse_figure_formats("") == F.parse_figure_formats(None) == ("png",)
    with pytest.raises(ValueError, match="unknown figure format 'jpg'; known: png, pdf, svg"):
        F.set_figure_formats("png,jpg")
    assert F.figure_formats() == ("png",)  # unchanged by the refused call
    assert F.set_figure_formats(("png", "pdf")) == ("png",)
    assert F.figure_formats() == ("png", "pdf")
    import os

    assert os.environ[F.FIGURES_ENV] == "png,pdf"  # worker processes inherit it
    F.set_figure_formats(None)
    assert F.FIGURES_ENV not in os.environ and F.figure_formats() == ("png",)
    monkeypatch.setenv(F.FIGURES_ENV, "pdf")
    assert F.figure_formats() == ("png", "pdf")


def test_pdf_beside_png_only_when_asked(tmp_path):
    cases = _folds(1)["fold_1"]
    plot_boxplots(cases, tmp_path / "a" / "boxplot.png")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["boxplot.png"]
    plot_boxplots(cases, tmp_path / "b" / "boxplot.png", formats=("png", "pdf"))
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["boxplot.pdf", "boxplot.png"]
    pdf = (tmp_path / "b" / "boxplot.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"/CreationDate" not in pdf
    assert (tmp_path / "b" / "boxplot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    F.set_figure_formats("png,pdf", environ=False)  # the process-wide default, as --figures png,pdf sets it
    write_report(cases, tmp_path / "r")
    plot_fold_boxplots(_folds(2), tmp_path / "r" / "boxplot_folds.png")
    write_instance_report([_inst("a", 0.3), _inst("b", 0.6)], tmp_path / "i")
    plot_instance_fold_boxplots({"0": [_inst("a", 0.3)], "1": [_inst("b", 0.6)]}, tmp_path / "i" / "boxplot_folds.png")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "boxplot.pdf", "boxplot.png", "boxplot_folds.pdf", "boxplot_folds.png", "per_case.csv", "summary.json",
        "summary.md"]
    assert {"boxplot.pdf", "boxplot_folds.pdf"} <= {p.name for p in (tmp_path / "i").iterdir()}
    plot_boxplots(cases, tmp_path / "c" / "boxplot.png", formats="png")  # an explicit argument wins
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["boxplot.png"]


def test_training_curve_pdf(tmp_path):
    from scribmed.training.training_curve import plot_training_curve

    history = {"epochs": [{"iteration": i, "loss": 1.0 / (i + 1), "pce": 0.5, "dice": 0.4,
                           "val_mean_dice": 0.1 * i} for i in range(1, 4)]}
    assert plot_training_curve(history, tmp_path / "training_curve.png") == tmp_path / "training_curve.png"
    assert [p.name for p in tmp_path.iterdir()] == ["training_curve.png"]
    plot_training_curve(history, tmp_path / "training_curve.png", formats=("png", "pdf"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training_curve.pdf", "training_curve.png"]
    assert plot_training_curve({"epochs": []}, tmp_path / "none.png") is None


def test_save_figure_is_atomic(tmp_path, monkeypatch):
    fig = make_boxplot_figure(_folds(1)["fold_1"])
    target = tmp_path / "boxplot.png"
    F.save_figure(fig, target)
    before = target.read_bytes()
    import scribmed.runtime.files as files

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(OSError):
        F.save_figure(make_boxplot_figure(_folds(1, ABDOMINAL)["fold_1"]), target, ("png", "pdf"))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["boxplot.png"]  # no temporary or half file


def test_nan_only_class_still_renders():
    cases = [CaseResult("a", (ClassResult(1, "RV", 0.0, math.nan, math.nan, "pred_empty", False),), "mm", "medpy",
                        "nan_counted")]
    assert F.text_outside_canvas(make_boxplot_figure(cases)) == []


# --------------------------------------------------------------------------------------------
# the documentation's figures
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc, image", [("metrics.md", "boxplot_example.png"),
                                        ("cross_validation.md", "overlay_example.png")])
def test_doc_figures_exist_are_small_and_referenced(doc, image):
    text = (REPO / "docs" / doc).read_text()
    assert re.search(rf"\]\(figures/{re.escape(image)}\)", text), f"docs/{doc} does not show {image}"
    path = REPO / "docs" / "figures" / image
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 200_000
    assert (REPO / "docs" / "figures" / "make_doc_figures.py").exists()
