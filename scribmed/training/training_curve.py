"""The training curve of a run: loss terms and the validation score against iterations.

Drawn from a run's history (:class:`~scribmed.training.run_record.RunRecorder` writes it); the
validation score plotted is the one the history names (``"validation"``: ``val_mean_dice`` for
the semantic recipes, ``val_dsb_score`` for the instance recipes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from scribmed.runtime.migrations import upgrade_history_record

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

__all__ = ["make_training_curve_figure", "plot_training_curve", "read_history"]


def read_history(history: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """A history mapping, or the ``history.json`` at a path, in the current schema."""
    if isinstance(history, Mapping):
        return upgrade_history_record(history)
    path = Path(history)
    return upgrade_history_record(json.loads(path.read_text()), path)


def make_training_curve_figure(
    history: Mapping[str, Any] | str | Path,
    val_key: Optional[str] = None,
    val_label: Optional[str] = None,
) -> Optional["Figure"]:
    """The figure of :func:`plot_training_curve`, or ``None`` when the history has no epochs yet.

    ``val_key`` / ``val_label``: the validation score and its name (default: the history's
    ``"validation"`` entry).

    Loss terms (left axis) in black and the colour-blind-safe palette, the validation score
    (right axis, [0, 1]) in vermillion; one legend below the axes; constrained layout.
    """
    from scribmed.runtime.figures import (
        OKABE_ITO,
        figure_legend,
        new_figure,
        palette_colour,
        set_title,
    )

    history = read_history(history)
    validation = history.get("validation") or {}
    val_key = val_key or validation.get("metric") or "val_mean_dice"
    val_label = val_label or validation.get("label") or val_key
    epochs = history.get("epochs", [])
    if not epochs:
        return None
    its = [e["iteration"] for e in epochs]
    fig = new_figure((7, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    terms = history.get("loss_terms") or ["pce", "dice"]
    colours = [OKABE_ITO["black"], *(palette_colour(i) for i in (0, 1, 2, 4, 5))]
    for key, style, colour in zip(["loss", *terms], ["-", "--", ":", "-.", (0, (1, 3)), (0, (5, 5))], colours):
        vals = [np.nan if e.get(key) is None else e[key] for e in epochs]
        ax.plot(its, vals, linestyle=style, color=colour, label=f"train {key}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    val = [np.nan if e.get(val_key) is None else e[val_key] for e in epochs]
    lines, labels = ax.get_legend_handles_labels()
    if not all(np.isnan(val)):
        ax2 = ax.twinx()
        ax2.plot(its, val, "o-", color=OKABE_ITO["vermillion"], markersize=3, label=val_label)
        ax2.set_ylabel(val_label)
        ax2.set_ylim(0, 1)
        l2, lb2 = ax2.get_legend_handles_labels()
        lines, labels = lines + l2, labels + lb2
    figure_legend(fig, lines, labels, max_cols=4, fontsize=8)
    set_title(ax, f"{str(history.get('recipe', 'dmpls')).upper()} training")
    return fig


def plot_training_curve(
    history: Mapping[str, Any] | str | Path,
    png_path: str | Path,
    val_key: Optional[str] = None,
    val_label: Optional[str] = None,
    formats: str | Sequence[str] | None = None,
) -> Optional[Path]:
    """Plot loss terms and the validation score against iterations into a PNG (matplotlib Agg).

    Args:
        history: a history dict or the path of ``history.json``.
        png_path: output PNG (written atomically).
        val_key / val_label: the per-epoch validation score plotted on the right axis and its
            name (default: the one the history names).
        formats: e.g. ``("png", "pdf")`` to write ``training_curve.pdf`` beside the PNG; default
            :func:`scribmed.runtime.figures.figure_formats`.

    Returns:
        The PNG path, or ``None`` when the history has no epochs yet.
    """
    from scribmed.runtime.figures import save_figure

    fig = make_training_curve_figure(history, val_key, val_label)
    if fig is None:
        return None
    return save_figure(fig, png_path, formats)
