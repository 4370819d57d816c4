"""Checkpoints of the semantic bundles (``dmpls_*``, ``samsp_*``, ``mixsup_*``) and prediction with them.

Loading a checkpoint's weights (``weights_only``) into the config's network, the inference
workflow's engine (the checkpoint read when it runs, not at ``initialize()``), the network input
size of a config key, the one-line checkpoint description an evaluation names and the ``fold.json``
marker an evaluation writes last (so ``scribmed cv merge`` merges bundle folds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from scribmed.data.case import Case
from scribmed.runtime.checkpoint import load_checkpoint
from scribmed.runtime.files import file_sha256

__all__ = ["as_size", "describe_checkpoint", "load_weights", "predict_with_checkpoint", "write_fold_record"]


def as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """Network input ``(h, w)`` from ``64`` or ``[64, 64]`` (command-line friendly)."""
    if isinstance(size, (int, float)):
        return (int(size), int(size))
    values = tuple(int(s) for s in size)
    if len(values) != 2:
        raise ValueError(f"size must be one int or two ints (h, w), got {size!r}")
    return values  # type: ignore[return-value]


def load_weights(network: torch.nn.Module, ckpt_path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a scribmed checkpoint (``weights_only=True``) into ``network``; return it on ``device``.

    Raises:
        DataError: missing or unsafe checkpoint, or weights that do not fit the network.
    """
    from scribmed.runtime.checkpoint import load_network_weights

    load_network_weights(network, ckpt_path)
    return network.to(device).eval()


def predict_with_checkpoint(network: torch.nn.Module, ckpt_path: str | Path, device: str | torch.device = "cpu",
                            **kwargs: Any) -> list[Path]:
    """Load ``ckpt_path``'s weights into ``network``, then :func:`~scribmed.training.inference.predict_cases`.

    The inference bundles' engine: the checkpoint is read when the workflow runs, so
    ``initialize()`` and ``check_properties()`` work before any training has happened.
    """
    from scribmed.training.inference import predict_cases

    return predict_cases(load_weights(network, ckpt_path, device), device=device, **kwargs)


#: how reports name the validation score a checkpoint holds
_SCORE_NAMES = {"val_mean_dice": "val mean Dice", "val_dsb_score": "val DSB score"}


def describe_checkpoint(path: str | Path) -> str:
    """One line naming a training checkpoint of any recipe for reports: file, recipe, iteration,
    its validation score (mean Dice, or DSB score for the instance recipes) and sha256."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    parts = [path.name, f"recipe {ckpt.get('recipe')}"]
    iteration = (ckpt.get("trainer") or {}).get("iteration")
    if iteration is not None:
        parts.append(f"iteration {iteration}")
    for key, name in _SCORE_NAMES.items():
        val: Optional[float] = ckpt.get(key)
        if val is not None:
            parts.append(f"{name} {val:.4f}")
    parts.append(f"sha256 {file_sha256(path)}")
    return f"{parts[0]} ({', '.join(parts[1:])}) at {path.resolve()}"


def write_fold_record(
    output_dir: str | Path, fold: int, ckpt_path: str | Path, policy: str, cases: dict[str, list[Case]], summary: Any = None
) -> Path:
    """Write ``output_dir/fold.json`` after an evaluation, so ``scribmed cv merge`` can merge bundle folds.

    Same marker as the cross-validation runner's (:data:`scribmed.crossval.runner.FOLD_DONE`):
    written last, it names the checkpoint, how it was chosen (``best``/``last``) and its sha256.

    Args:
        output_dir: the fold's run folder (``.../fold_<k>``; its ``evaluation/`` holds the report).
        fold: 1-based fold number.
        ckpt_path: the checkpoint evaluated.
        policy: ``"best"`` or ``"last"``.
        cases: the fold's case lists (counts are recorded).
        summary: the evaluation's ``summary.json`` path (only orders the call after the evaluation).
    """
    from scribmed.crossval.runner import write_fold_record as _write

    ckpt = Path(ckpt_path)
    counts = {s: len(v) for s, v in cases.items()}
    return _write(Path(output_dir), fold, ckpt, policy, file_sha256(ckpt), counts, written_by="bundle evaluate workflow")
