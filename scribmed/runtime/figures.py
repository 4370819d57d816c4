"""Figures scribmed writes: one colour-blind-safe palette, layout that clips nothing, PNG (+ PDF).

Every figure of the toolkit (per-case and per-fold box plots, instance box plots, training
curves, overlays, the annotation-cost plot) is built as a :class:`matplotlib.figure.Figure` by a
``make_*_figure`` function and written by :func:`save_figure`, so they share:

* **one palette**: the Okabe–Ito colours (:data:`OKABE_ITO`; Okabe & Ito 2008, Wong, *Nature
  Methods* 8:441, 2011), told apart by readers with any common colour-vision deficiency. Class
  index ``k`` has the same colour everywhere (:func:`class_colour`): box ``k`` of a box plot,
  label ``k`` of an overlay, entry ``k`` of a legend. Index 0 (background) is never drawn.
* **a layout that clips nothing**: figures use constrained layout, long titles are wrapped to the
  figure (or axes) width (:func:`wrap_text`, :func:`set_title`), and files are saved with a tight
  bounding box. :func:`text_outside_canvas` draws a figure and lists any text that runs off it.
* **formats**: the PNG is always written (the file names are part of every run folder's layout);
  a PDF (vector, for papers) and/or SVG is written beside it when asked, per call (``formats=``)
  or process-wide (:func:`set_figure_formats`, which the ``--figures`` option and the
  ``figures`` config key set). Every file is written atomically
  (:func:`scribmed.runtime.files.atomic_write_bytes`).

On the bottom floor (:mod:`scribmed.runtime`) because every floor that draws uses it: training
curves, reports, overlays. The standard library, numpy and matplotlib only, and matplotlib is
imported inside the functions, so importing this module stays cheap.
The Agg canvas is used throughout: no display, no global backend change, no pyplot state.
"""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from scribmed.runtime.files import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

__all__ = [
    "BACKGROUND_SCRIBBLE_COLOUR",
    "BOXPLOT_STYLE",
    "CLASS_COLOURS",
    "FIGURES_ENV",
    "FORMATS",
    "OKABE_ITO",
    "class_colour",
    "class_legend_handles",
    "figure_formats",
    "figure_legend",
    "figure_paths",
    "label_rgba",
    "new_figure",
    "palette_colour",
    "parse_figure_formats",
    "save_figure",
    "set_figure_formats",
    "set_title",
    "style_boxes",
    "text_outside_canvas",
    "wrap_text",
]

PathLike = Union[str, os.PathLike]

#: The Okabe–Ito palette, in its published order (hex sRGB).
OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

#: Colour of class index ``k >= 1`` is ``CLASS_COLOURS[(k - 1) % 7]``: blue, orange, reddish
#: purple, bluish green, vermillion, sky blue, yellow (cardiac: RV blue, Myo orange, LV purple;
#: abdominal: liver blue, right kidney orange, left kidney purple, spleen green). Black is kept
#: for lines and text; yellow comes last (it is faint on white).
CLASS_COLOURS: tuple[str, ...] = tuple(
    OKABE_ITO[k] for k in ("blue", "orange", "reddish_purple", "bluish_green", "vermillion", "sky_blue", "yellow")
)

#: Background (class 0) scribble strokes: neutral grey, visible on a grey-scale image.
BACKGROUND_SCRIBBLE_COLOUR = "#999999"

#: Formats :func:`save_figure` can write; ``png`` is always written.
FORMATS: tuple[str, ...] = ("png", "pdf", "svg")

#: Environment variable holding the process-wide formats (``png,pdf``), so worker processes
#: (local executor, torchrun, Slurm jobs) inherit what the parent's ``--figures`` asked for.
FIGURES_ENV = "SCRIBMED_FIGURES"

#: ``Axes.boxplot`` keywords of every box plot: filled boxes (coloured by :func:`style_boxes`),
#: black medians, white mean triangles, small open fliers.
BOXPLOT_STYLE: dict[str, Any] = {
    "patch_artist": True,
    "showmeans": True,
    "medianprops": {"color": "black", "linewidth": 1.5},
    "meanprops": {"marker": "^", "markerfacecolor": "white", "markeredgecolor": "black", "markersize": 5},
    "flierprops": {"marker": "o", "markersize": 3, "markerfacecolor": "none", "markeredgecolor": "#555555"},
}

_EXPLICIT: Optional[tuple[str, ...]] = None  # set by set_figure_formats


# --------------------------------------------------------------------------------------------
# palette
# --------------------------------------------------------------------------------------------


def class_colour(index: int) -> Optional[str]:
    """The hex colour of class ``index`` in every figure; ``None`` for 0 (background, not drawn)."""
    index = int(index)
    if index < 0:
        raise ValueError(f"class index must be >= 0, got {index}")
    if index == 0:
        return None
    return CLASS_COLOURS[(index - 1) % len(CLASS_COLOURS)]


def palette_colour(i: int) -> str:
    """The ``i``-th colour (from 0) of a sequence of things that are not classes (folds, curves).

    Okabe–Ito without black and yellow, cycling: blue, orange, bluish green, vermillion,
    reddish purple, sky blue.
    """
    seq = ("blue", "orange", "bluish_green", "vermillion", "reddish_purple", "sky_blue")
    return OKABE_ITO[seq[int(i) % len(seq)]]


def _rgb(hex_colour: str) -> np.ndarray:
    h = hex_colour.lstrip("#")
    return np.array([int(h[i : i + 2], 16) / 255.0 for i in (0, 2, 4)], dtype=np.float32)


def label_rgba(labels: np.ndarray, ignore: Optional[int] = None, alpha: float = 0.55) -> np.ndarray:
    """An RGBA image ``labels.shape + (4,)`` colouring each label by :func:`class_colour`.

    Without ``ignore`` (a label map: prediction, ground truth) background 0 is transparent and
    classes are drawn with ``alpha``. With ``ignore`` (a scribble: ``ignore`` = unlabeled) the
    unlabeled pixels are transparent, strokes are opaque and background strokes (0) are grey
    (:data:`BACKGROUND_SCRIBBLE_COLOUR`).
    """
    labels = np.asarray(labels)
    out = np.zeros(labels.shape + (4,), dtype=np.float32)
    for k in np.unique(labels):
        k = int(k)
        if k == ignore or (ignore is None and k == 0):
            continue
        colour = class_colour(k) if k != 0 else BACKGROUND_SCRIBBLE_COLOUR
        mask = labels == k
        out[mask, :3] = _rgb(colour)
        out[mask, 3] = alpha if ignore is None else 1.0
    return out


def class_legend_handles(names: Mapping[int, str], alpha: float = 0.55, background_scribble: bool = False) -> list:
    """Legend patches ``name → colour`` for the foreground classes of ``names`` (index → name).

    Each patch has ``gid`` ``"class_<k>"``; ``background_scribble`` adds the grey stroke entry.
    """
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=class_colour(k), edgecolor=class_colour(k), alpha=alpha, label=str(names[k]), gid=f"class_{k}")
        for k in sorted(names)
        if int(k) != 0
    ]
    if background_scribble:
        handles.append(Patch(facecolor=BACKGROUND_SCRIBBLE_COLOUR, edgecolor=BACKGROUND_SCRIBBLE_COLOUR,
                             label="background (scribble)", gid="class_0"))
    return handles


def style_boxes(box: Mapping[str, Any], colours: Sequence[Optional[str]], alpha: float = 0.45,
                gids: Optional[Sequence[Optional[str]]] = None) -> None:
    """Fill the boxes of an ``Axes.boxplot(..., **BOXPLOT_STYLE)`` result, one colour per box.

    ``None`` leaves a box white. ``gids`` (e.g. ``"class_3"``) tag the box patches, so tests and
    users can find the box of a class.
    """
    for i, patch in enumerate(box["boxes"]):
        colour = colours[i % len(colours)] if colours else None
        patch.set_facecolor(colour if colour is not None else "white")
        patch.set_alpha(alpha if colour is not None else 1.0)
        patch.set_edgecolor("black")
        if gids is not None and gids[i] is not None:
            patch.set_gid(gids[i])


# --------------------------------------------------------------------------------------------
# figures, titles, layout checks
# --------------------------------------------------------------------------------------------


def new_figure(figsize: tuple[float, float], dpi: float = 100) -> "Figure":
    """A constrained-layout :class:`~matplotlib.figure.Figure` on an Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _measure_renderer(fig: "Figure") -> Any:
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(1, 1, fig.dpi)


def wrap_text(fig: "Figure", text: str, fontsize: Any = None, width: Optional[float] = None,
              fraction: float = 0.96) -> str:
    """``text`` with line breaks so that no line is wider than ``fraction`` of ``width``.

    Args:
        fig: the figure the text goes in (its dpi sets the pixel size of the font).
        text: the text; its own line breaks are kept, each line is wrapped at spaces
            (:func:`textwrap.wrap`), a single word longer than the width is left whole.
        fontsize: points or a size name (``"large"``); default ``rcParams["figure.titlesize"]``.
        width: available width in inches; default the figure's width.
        fraction: share of ``width`` a line may take (margins).
    """
    import matplotlib as mpl
    from matplotlib.font_manager import FontProperties

    if not text:
        return text
    fontsize = mpl.rcParams["figure.titlesize"] if fontsize is None else fontsize
    prop = FontProperties(size=fontsize)
    renderer = _measure_renderer(fig)
    avail = fraction * (fig.get_figwidth() if width is None else width) * fig.dpi

    def px(line: str) -> float:
        return renderer.get_text_width_height_descent(line, prop, ismath=False)[0]

    out: list[str] = []
    for line in text.split("\n"):
        if px(line) <= avail:
            out.append(line)
            continue
        parts = [line]
        for chars in range(len(line) - 1, 7, -1):
            parts = textwrap.wrap(line, chars, break_long_words=False, break_on_hyphens=False)
            if max(px(p) for p in parts) <= avail:
                break
        out.extend(parts)
    return "\n".join(out)


def set_title(target: Any, text: str, **kwargs: Any) -> Any:
    """Set a wrapped title: ``Figure`` → ``suptitle`` (figure width), ``Axes`` → ``set_title``.

    An axes title is wrapped to the axes' share of the figure width (before layout). Keywords go
    to ``suptitle`` / ``set_title`` (``fontsize`` is also used to measure). Returns the Text.
    """
    import matplotlib as mpl
    from matplotlib.figure import FigureBase

    if isinstance(target, FigureBase):
        fontsize = kwargs.get("fontsize", mpl.rcParams["figure.titlesize"])
        return target.suptitle(wrap_text(target, text, fontsize), **kwargs)
    fig = target.figure
    fig = getattr(fig, "figure", None) or fig  # a subfigure's root figure
    fontsize = kwargs.get("fontsize", mpl.rcParams["axes.titlesize"])
    width = target.get_position().width * fig.get_figwidth()
    return target.set_title(wrap_text(fig, text, fontsize, width=width, fraction=1.0), **kwargs)


def figure_legend(fig: "Figure", handles: Sequence[Any], labels: Optional[Sequence[str]] = None,
                  max_cols: int = 6, loc: str = "outside lower center", **kwargs: Any) -> Any:
    """A figure legend (default below the axes) with as many columns (up to ``max_cols``) as fit.

    Columns are dropped until the legend is no wider than the figure, so long entries (loss
    term names, class names) go on more rows instead of off the canvas. Keywords go to
    ``Figure.legend``. Returns the Legend.
    """
    if labels is None:
        labels = [h.get_label() for h in handles]
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else _measure_renderer(fig)
    ncols = max(1, min(max_cols, len(labels)))
    while True:
        legend = fig.legend(handles, labels, loc=loc, ncols=ncols, **kwargs)
        if ncols == 1 or legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width:
            return legend
        legend.remove()
        ncols -= 1


def text_outside_canvas(fig: "Figure", tol: float = 1.0) -> list[str]:
    """Draw ``fig`` and return the texts drawn (even partly) outside its canvas.

    Every text that is actually drawn counts — titles, suptitles, axis labels, tick labels, legend
    entries, annotations — and is outside when its window extent leaves the figure's
    ``[0, width] x [0, height]`` pixels by more than ``tol``. Hidden texts (invisible, empty,
    of switched-off axes, clipped annotations) are not drawn, so they never count. An empty list
    means nothing is clipped when the figure is saved at its own size.
    """
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.text import Text

    drawn: list[Any] = []

    class _Recording(RendererAgg):
        def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
            drawn.append(mtext)
            return super().draw_text(gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)

        def draw_tex(self, gc, x, y, s, prop, angle, *, mtext=None):
            drawn.append(mtext)
            return super().draw_tex(gc, x, y, s, prop, angle, mtext=mtext)

    if fig.canvas is None or type(fig.canvas).__name__ == "FigureCanvasBase":
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    width, height = fig.bbox.width, fig.bbox.height
    renderer = _Recording(int(np.ceil(width)), int(np.ceil(height)), fig.dpi)
    fig.draw(renderer)
    out: list[str] = []
    seen: set[int] = set()
    for text in drawn:
        if text is None or id(text) in seen or not isinstance(text, Text):
            continue
        seen.add(id(text))
        bb = Text.get_window_extent(text, renderer)  # the text itself, not an annotation's arrow
        if bb.x0 < -tol or bb.y0 < -tol or bb.x1 > width + tol or bb.y1 > height + tol:
            out.append(text.get_text())
    return out


# --------------------------------------------------------------------------------------------
# formats and saving
# --------------------------------------------------------------------------------------------


def parse_figure_formats(formats: Union[str, Iterable[str], None]) -> tuple[str, ...]:
    """Normalise ``"png,pdf"`` / ``["PDF"]`` / ``(".png", "svg")`` to a tuple starting with ``"png"``.

    ``None`` or empty gives ``("png",)``. An unknown format raises ``ValueError`` naming the
    known ones (:data:`FORMATS`).
    """
    if formats is None:
        items: list[str] = []
    elif isinstance(formats, str):
        items = formats.split(",")
    else:
        items = [str(f) for f in formats]
    out = ["png"]
    for item in items:
        fmt = item.strip().lower().lstrip(".")
        if not fmt:
            continue
        if fmt not in FORMATS:
            raise ValueError(f"unknown figure format {item.strip()!r}; known: {', '.join(FORMATS)}")
        if fmt not in out:
            out.append(fmt)
    return tuple(out)


def figure_formats() -> tuple[str, ...]:
    """The formats every figure writer uses by default: :func:`set_figure_formats`'s, else
    ``$SCRIBMED_FIGURES`` (:data:`FIGURES_ENV`), else ``("png",)``."""
    if _EXPLICIT is not None:
        return _EXPLICIT
    return parse_figure_formats(os.environ.get(FIGURES_ENV))


def set_figure_formats(formats: Union[str, Iterable[str], None], environ: bool = True) -> tuple[str, ...]:
    """Set the process-wide figure formats (``"png,pdf"`` or ``("png", "pdf")``); returns the previous ones.

    ``None`` goes back to the default (``png`` only, or ``$SCRIBMED_FIGURES``). With ``environ``
    (default) the choice is also put in ``$SCRIBMED_FIGURES`` (removed by ``None``), so worker
    processes started afterwards write the same formats. An unknown format raises ``ValueError``
    and changes nothing.
    """
    global _EXPLICIT
    previous = figure_formats()
    if formats is None:
        _EXPLICIT = None
        if environ:
            os.environ.pop(FIGURES_ENV, None)
        return previous
    parsed = parse_figure_formats(formats)
    _EXPLICIT = parsed
    if environ:
        os.environ[FIGURES_ENV] = ",".join(parsed)
    return previous


def figure_paths(path: PathLike, formats: Union[str, Iterable[str], None] = None) -> list[Path]:
    """The files :func:`save_figure` writes for ``path``: the PNG, then one per extra format."""
    path = Path(path)
    fmts = figure_formats() if formats is None else parse_figure_formats(formats)
    return [path, *(path.with_suffix(f".{f}") for f in fmts if f != "png")]


def save_figure(fig: "Figure", path: PathLike, formats: Union[str, Iterable[str], None] = None,
                dpi: Optional[float] = None) -> Path:
    """Lay out and write ``fig`` as PNG at ``path``, plus e.g. a PDF beside it; returns ``path``.

    Args:
        fig: the figure. One without a layout engine gets constrained layout; every file is
            saved with ``bbox_inches="tight"`` (a small pad), so nothing is clipped.
        path: the PNG's path (written as PNG whatever its suffix; normally ``*.png``).
        formats: e.g. ``("png", "pdf")`` or ``"png,pdf"``; default :func:`figure_formats`.
            Extra formats go beside the PNG with their own suffix (``boxplot.pdf``).
        dpi: raster resolution; default the figure's.

    Each file is written atomically (temporary file, then ``os.replace``); PDF and SVG carry
    no creation date, so the same figure gives the same bytes.
    """
    paths = figure_paths(path, formats)
    if fig.get_layout_engine() is None:
        fig.set_layout_engine("constrained")
    common = {"bbox_inches": "tight", "pad_inches": 0.05, "dpi": dpi if dpi is not None else "figure"}
    metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}
    for target in paths:
        fmt = "png" if target == paths[0] else target.suffix.lstrip(".")
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, metadata=metadata.get(fmt), **common)
        atomic_write_bytes(target, buf.getvalue())
    return paths[0]
