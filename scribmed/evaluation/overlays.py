"""Overlay figures for reports: image, scribble, prediction and ground truth of one slice side by side.

Each overlay states what it shows: the case id, the slice (and how it was chosen), the checkpoint
whose prediction it is (when the caller says), and a legend of the dataset's class names in the
colours used for them in every scribmed figure (:func:`scribmed.runtime.figures.class_colour`,
Okabe–Ito, colour-blind safe; the box plots colour class ``k`` the same way). Built by
:func:`make_overlay_figure` and saved by :func:`scribmed.runtime.figures.save_figure`: PNG, plus a
PDF beside it when the figure formats ask for one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np

from scribmed.data.case import Case, ClassMap
from scribmed.runtime.figures import (
    class_legend_handles,
    figure_legend,
    label_rgba,
    new_figure,
    save_figure,
    set_title,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

__all__ = ["checkpoint_label", "make_overlay_figure", "pick_slice", "write_overlay", "write_overlays"]

SliceChoice = Union[int, Sequence[Optional[int]], None]


def _rgba(labels: np.ndarray, ignore: Optional[int] = None, alpha: float = 0.55) -> np.ndarray:
    """Kept for callers of the old private helper: :func:`scribmed.runtime.figures.label_rgba`."""
    return label_rgba(labels, ignore, alpha)


def pick_slice(label: Optional[np.ndarray], fallback: np.ndarray) -> int:
    """The slice with the most foreground (middle slice when there is no label)."""
    if label is not None and label.any():
        return int(np.argmax((label > 0).reshape(label.shape[0], -1).sum(1)))
    return fallback.shape[0] // 2


_pick_slice = pick_slice  # the old private name


def checkpoint_label(checkpoint: Optional[Union[str, Path]], policy: Optional[str] = None) -> str:
    """How an overlay names its checkpoint: ``best.pt (best)``; ``none`` for a method without one."""
    name = "none" if checkpoint is None else Path(checkpoint).name
    return f"{name} ({policy})" if policy and policy != "none" else name


def make_overlay_figure(
    case: Case,
    prediction: np.ndarray,
    class_map: ClassMap,
    *,
    slice_index: Optional[int] = None,
    checkpoint: Optional[str] = None,
) -> "Figure":
    """image | scribble | prediction | ground truth of one slice, with a legend of the classes.

    Args:
        case: the case (image, optional scribble and label).
        prediction: the predicted label map, the case's shape.
        class_map: the dataset's class map: legend names, the scribble's ignore value.
        slice_index: the slice shown; default the one with the most ground-truth foreground
            (the middle slice when the case has no label).
        checkpoint: stated under the title, e.g. :func:`checkpoint_label` ``(path, "best")``.
    """
    image = np.asarray(case.image)
    prediction = np.asarray(prediction)
    label = case.label
    n = image.shape[0]
    if slice_index is None:
        z = pick_slice(label, image)
        how = "most foreground" if label is not None and np.asarray(label).any() else "middle"
    else:
        z = int(slice_index)
        if not -n <= z < n:
            raise ValueError(f"{case.case_id}: slice_index {slice_index} is outside 0..{n - 1}")
        z %= n
        how = "chosen"
    panels = [("image", None, None), ("scribble", case.scribble, class_map.ignore_index)]
    panels += [("prediction", prediction, None), ("ground truth", label, None)]
    fig = new_figure((3 * len(panels), 3.9))
    present: set[int] = set()
    background_strokes = False
    for i, (title, labels, ignore) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        plane = image[z]
        ax.imshow(plane, cmap=None if plane.ndim == 3 else "gray", interpolation="nearest")
        if labels is not None:
            layer = np.asarray(labels[z])
            ax.imshow(label_rgba(layer, ignore), interpolation="nearest")
            values = {int(v) for v in np.unique(layer)} - {0, ignore}
            present |= values
            background_strokes |= ignore is not None and bool((layer == 0).any())
        elif title != "image":
            title += " (none)"
        set_title(ax, title, fontsize=9)
        ax.axis("off")
        ax.set_xticks([])  # no tick machinery for an image panel: the layout skips it
        ax.set_yticks([])
    names = dict(class_map.names)
    for k in sorted(present - set(names)):
        names[k] = f"class {k}"
    lines = [f"{case.case_id}, slice {z} of {n} (0-based; {how})"]
    if checkpoint:
        lines.append(f"checkpoint {checkpoint}")
    set_title(fig, "\n".join(lines), fontsize=10)
    handles = class_legend_handles(names, background_scribble=background_strokes)
    if handles:
        figure_legend(fig, handles, max_cols=6, fontsize=8, frameon=False)
    return fig


def write_overlay(
    case: Case,
    prediction: np.ndarray,
    class_map: ClassMap,
    path: Path,
    *,
    slice_index: Optional[int] = None,
    checkpoint: Optional[str] = None,
    formats: Union[str, Sequence[str], None] = None,
) -> Path:
    """One PNG (atomically): :func:`make_overlay_figure`; ``formats`` may add a PDF beside it."""
    fig = make_overlay_figure(case, prediction, class_map, slice_index=slice_index, checkpoint=checkpoint)
    return save_figure(fig, path, formats)


def write_overlays(
    cases: Sequence[Case],
    predictions: Sequence[np.ndarray | Path],
    class_map: ClassMap,
    out_dir: Path,
    *,
    checkpoint: Optional[str] = None,
    slice_index: SliceChoice = None,
    formats: Union[str, Sequence[str], None] = None,
) -> list[Path]:
    """Overlay PNGs ``<out_dir>/<case_id>.png`` for the given cases and their predictions (arrays or NIfTI files).

    Args:
        checkpoint: the checkpoint the predictions come from, stated on every overlay
            (e.g. ``checkpoint_label(model.checkpoint, model.policy)`` → ``best.pt (best)``).
        slice_index: one slice for every case, one per case (``None`` entries: the default
            rule), or ``None``: each case's slice with the most ground-truth foreground.
        formats: e.g. ``("png", "pdf")``; default :func:`scribmed.runtime.figures.figure_formats`.
    """
    from scribmed.data.nifti import read_label_nifti

    cases = list(cases)
    if slice_index is None or isinstance(slice_index, (int, np.integer)):
        slices: list[Optional[int]] = [slice_index] * len(cases)
    else:
        slices = list(slice_index)
        if len(slices) != len(cases):
            raise ValueError(f"slice_index has {len(slices)} entries for {len(cases)} cases")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_overlay(
            case,
            pred if isinstance(pred, np.ndarray) else read_label_nifti(pred, "prediction").array,
            class_map,
            out_dir / f"{case.case_id}.png",
            slice_index=z,
            checkpoint=checkpoint,
            formats=formats,
        )
        for case, pred, z in zip(cases, predictions, slices)
    ]
