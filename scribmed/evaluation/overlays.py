"""Overlay figures for reports: image, scribble, prediction and ground truth of one slice side by side."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from scribmed.data.case import Case, ClassMap
from scribmed.files import atomic_write_bytes

__all__ = ["write_overlay", "write_overlays"]

# fixed colours per class index (background transparent), readable in print and for colour-blind readers
_COLOURS = np.array(
    [[0, 0, 0], [0.0, 0.45, 0.70], [0.90, 0.62, 0.0], [0.80, 0.47, 0.65], [0.0, 0.62, 0.45], [0.94, 0.89, 0.26]]
)


def _rgba(labels: np.ndarray, ignore: Optional[int] = None, alpha: float = 0.55) -> np.ndarray:
    out = np.zeros(labels.shape + (4,), dtype=np.float32)
    for k in np.unique(labels):
        if k == ignore or (ignore is None and k == 0):
            continue
        colour = _COLOURS[int(k) % len(_COLOURS)] if k != 0 else np.array([0.6, 0.6, 0.6])
        out[labels == k, :3] = colour
        out[labels == k, 3] = alpha if ignore is None else 1.0
    return out


def _pick_slice(label: Optional[np.ndarray], fallback: np.ndarray) -> int:
    """The slice with the most foreground (middle slice when there is no label)."""
    if label is not None and label.any():
        return int(np.argmax((label > 0).reshape(label.shape[0], -1).sum(1)))
    return fallback.shape[0] // 2


def write_overlay(case: Case, prediction: np.ndarray, class_map: ClassMap, path: Path) -> Path:
    """One PNG: image | scribble | prediction | ground truth for the most informative slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = case.image
    z = _pick_slice(case.label, image)
    panels = [("image", None, None), ("scribble", case.scribble, class_map.ignore_index)]
    panels += [("prediction", prediction, None), ("ground truth", case.label, None)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
    for ax, (title, labels, ignore) in zip(axes, panels):
        ax.imshow(image[z], cmap="gray")
        if labels is not None:
            ax.imshow(_rgba(np.asarray(labels[z]), ignore))
        elif title != "image":
            title += " (none)"
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{case.case_id}, slice {z}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def write_overlays(
    cases: Sequence[Case], predictions: Sequence[np.ndarray | Path], class_map: ClassMap, out_dir: Path
) -> list[Path]:
    """Overlay PNGs ``<out_dir>/<case_id>.png`` for the given cases and their predictions (arrays or NIfTI files)."""
    from scribmed.data.nifti import read_label_nifti

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_overlay(
            case,
            pred if isinstance(pred, np.ndarray) else read_label_nifti(pred, "prediction").array,
            class_map,
            out_dir / f"{case.case_id}.png",
        )
        for case, pred in zip(cases, predictions)
    ]
