"""Overlays: nothing clipped, a legend of the dataset's classes in the shared colours, slice and checkpoint stated."""

from __future__ import annotations

import numpy as np
import pytest

from scribmed.data.case import ABDOMINAL, CARDIAC
from scribmed.data.phantoms import generate_abdominal, generate_cardiac
from scribmed.evaluation.overlays import (
    checkpoint_label,
    make_overlay_figure,
    write_overlays,
)
from scribmed.metrics import CaseResult, ClassResult
from scribmed.runtime import figures as F
from scribmed.evaluation.report import make_boxplot_figure


@pytest.fixture(scope="module")
def cardiac():
    return generate_cardiac(1, 0, size=64, slices=(4, 4), frames=("ED",))[0]


@pytest.fixture(scope="module")
def abdominal():
    return generate_abdominal(1, 0, size=64, slices=(4, 4), modalities=("T1",))[0]


def _hex(colour) -> str:
    from matplotlib.colors import to_hex

    return to_hex(colour, keep_alpha=False).upper()


def _legend(fig) -> dict[str, str]:
    (legend,) = fig.legends
    return {t.get_text(): _hex(h.get_facecolor()) for t, h in zip(legend.get_texts(), legend.legend_handles)}


def test_overlay_fits_and_states_case_slice_and_checkpoint(cardiac):
    case = cardiac.to_case()
    pred = np.roll(cardiac.label, 2, axis=2)
    fig = make_overlay_figure(case, pred, CARDIAC, checkpoint=checkpoint_label("/run/fold_1/train/best.pt", "best"))
    assert F.text_outside_canvas(fig) == []
    title = fig.get_suptitle()
    z = int(np.argmax((cardiac.label > 0).reshape(cardiac.label.shape[0], -1).sum(1)))  # today's rule
    assert f"{case.case_id}, slice {z} of 4" in title and "most foreground" in title
    assert "checkpoint best.pt (best)" in title
    chosen = make_overlay_figure(case, pred, CARDIAC, slice_index=1)
    assert "slice 1 of 4" in chosen.get_suptitle() and "checkpoint" not in chosen.get_suptitle()
    with pytest.raises(ValueError, match="slice_index 9"):
        make_overlay_figure(case, pred, CARDIAC, slice_index=9)


def test_checkpoint_label():
    assert checkpoint_label("/a/b/best.pt", "best") == "best.pt (best)"
    assert checkpoint_label("last.pt", "last") == "last.pt (last)"
    assert checkpoint_label(None, "none") == "none"


def test_legend_lists_the_class_names_in_the_shared_colours(cardiac, abdominal):
    fig = make_overlay_figure(cardiac.to_case(), cardiac.label, CARDIAC)
    legend = _legend(fig)
    assert [n for n in legend if n != "background (scribble)"] == ["RV", "Myo", "LV"]
    assert legend == {"RV": F.class_colour(1), "Myo": F.class_colour(2), "LV": F.class_colour(3),
                      "background (scribble)": F.BACKGROUND_SCRIBBLE_COLOUR.upper()}
    legend = _legend(make_overlay_figure(abdominal.to_case(), abdominal.label, ABDOMINAL))
    assert {"liver", "right_kidney", "left_kidney", "spleen"} <= set(legend)
    assert legend["spleen"] == F.class_colour(4)
    assert F.text_outside_canvas(make_overlay_figure(abdominal.to_case(), abdominal.label, ABDOMINAL)) == []


def test_overlay_and_box_plot_give_a_class_the_same_colour(cardiac):
    fig = make_overlay_figure(cardiac.to_case(), cardiac.label, CARDIAC, slice_index=1)
    pred_ax = fig.axes[2]
    layer = pred_ax.images[1].get_array()  # the prediction's RGBA layer over the image
    box = make_boxplot_figure([CaseResult("a", tuple(ClassResult(k, n, 0.8, 2.0, 1.0, None, False)
                                                      for k, n in ((1, "RV"), (2, "Myo"), (3, "LV"))),
                                          "mm", "medpy", "nan_counted")])
    box_colour = {p.get_gid(): _hex(p.get_facecolor()) for p in box.axes[0].patches if p.get_gid()}
    legend = _legend(fig)
    for k, name in ((1, "RV"), (2, "Myo"), (3, "LV")):
        mask = np.asarray(cardiac.label[1]) == k
        assert mask.any()
        pixel = np.unique(np.asarray(layer)[mask][:, :3], axis=0)
        assert len(pixel) == 1 and _hex(pixel[0]) == F.class_colour(k)
        assert legend[name] == box_colour[f"class_{k}"] == F.class_colour(k)


def test_write_overlays_names_formats_and_slices(tmp_path, cardiac, abdominal):
    cases = [cardiac.to_case(), abdominal.to_case()]
    paths = write_overlays(cases[:1], [cardiac.label], CARDIAC, tmp_path / "a", checkpoint="best.pt (best)")
    assert paths == [tmp_path / "a" / f"{cardiac.case_id}.png"]
    assert [p.name for p in (tmp_path / "a").iterdir()] == [f"{cardiac.case_id}.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    F.set_figure_formats("png,pdf", environ=False)
    write_overlays(cases[:1], [cardiac.label], CARDIAC, tmp_path / "b", slice_index=[2])
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [f"{cardiac.case_id}.pdf", f"{cardiac.case_id}.png"]
    with pytest.raises(ValueError, match="2 entries for 1 cases"):
        write_overlays(cases[:1], [cardiac.label], CARDIAC, tmp_path / "c", slice_index=[0, 1])
