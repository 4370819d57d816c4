"""Checkpoints of the semantic bundles (``dmpls_*``, ``samsp_*``, ``mixsup_*``) and prediction with them.

Loading a checkpoint's weights (``weights_only``) into the config's network, the inference
workflow's engine (the checkpoint read when it runs, not at ``initialize()``), the network input
size and channels a checkpoint was trained with (:func:`checkpoint_size`: a config that asks for
others is refused in one line), the run's model-zoo file ``models/model.pt``
(:func:`publish_model`), the one-line checkpoint description an evaluation names and the
``fold.json`` marker an evaluation writes last (so ``scribmed cv merge`` merges bundle folds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import shutil

import torch

from scribmed.data.case import Case
from scribmed.data.errors import DataError
from scribmed.runtime.checkpoint import load_checkpoint
from scribmed.runtime.files import atomic_output, file_sha256

__all__ = [
    "as_size",
    "checkpoint_size",
    "describe_checkpoint",
    "load_weights",
    "predict_with_checkpoint",
    "publish_model",
    "trained_input",
    "write_fold_record",
]


def as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """Network input ``(h, w)`` from ``64`` or ``[64, 64]`` (command-line friendly)."""
    if isinstance(size, (int, float)):
        return (int(size), int(size))
    values = tuple(int(s) for s in size)
    if len(values) != 2:
        raise ValueError(f"size must be one int or two ints (h, w), got {size!r}")
    return values  # type: ignore[return-value]


def trained_input(ckpt_path: str | Path) -> tuple[Optional[tuple[int, int]], Optional[int]]:
    """``(size, in_channels)`` a scribmed checkpoint was trained with (its stored ``config``);
    ``None`` for what it does not record (e.g. a bare state dict)."""
    config = load_checkpoint(ckpt_path).get("config") or {}
    size = config.get("size")
    channels = config.get("in_channels")
    return (as_size(size) if size is not None else None), (int(channels) if channels is not None else None)


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _refuse_other_channels(ckpt_path: str | Path, trained: Optional[int], wanted: Optional[int]) -> None:
    if wanted is not None and trained is not None and int(wanted) != trained:
        raise DataError(ckpt_path, f"checkpoint trained on {trained} input channel(s), this config has in_channels "
                        f"{int(wanted)}: set in_channels to {trained}")


def checkpoint_size(ckpt_path: str | Path, size: Optional[int | Sequence[int]] = None,
                    in_channels: Optional[int] = None) -> tuple[int, int]:
    """The network input ``(h, w)`` to predict with ``ckpt_path``: its training size.

    ``size`` ``None`` takes the checkpoint's; a size (or ``in_channels``) other than the
    checkpoint's is refused, since a network run at another size than it was trained at
    segments silently worse. A checkpoint that records no size accepts the given one.

    Raises:
        DataError: one line naming the checkpoint and both sizes (or channel counts); a missing
            or unsafe checkpoint.
    """
    trained, channels = trained_input(ckpt_path)
    _refuse_other_channels(ckpt_path, channels, in_channels)
    if trained is None:
        if size is None:
            raise DataError(ckpt_path, "checkpoint records no training size: pass --size")
        return as_size(size)
    if size is not None and as_size(size) != trained:
        raise DataError(ckpt_path, f"checkpoint trained at {_size_text(trained)}, this config asks for "
                        f"{_size_text(as_size(size))}: pass --size {trained[0]} or leave size null (the checkpoint's)")
    return trained


def load_weights(network: torch.nn.Module, ckpt_path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a scribmed checkpoint (``weights_only=True``) into ``network``; return it on ``device``.

    A network with an ``in_channels`` attribute must have the checkpoint's input channels.

    Raises:
        DataError: missing or unsafe checkpoint, other input channels than the checkpoint's, or
            weights that do not fit the network.
    """
    from scribmed.runtime.checkpoint import load_network_weights

    channels = getattr(network, "in_channels", None)
    if isinstance(channels, int):
        _refuse_other_channels(ckpt_path, trained_input(ckpt_path)[1], channels)
    load_network_weights(network, ckpt_path)
    return network.to(device).eval()


def predict_with_checkpoint(network: torch.nn.Module, ckpt_path: str | Path, device: str | torch.device = "cpu",
                            size: Optional[int | Sequence[int]] = None, ensemble: Sequence[str | Path] = (),
                            mirror: bool = False, **kwargs: Any) -> list[Path]:
    """Load ``ckpt_path``'s weights into ``network``, then :func:`~scribmed.training.inference.predict_cases`
    at the checkpoint's training size (:func:`checkpoint_size`: ``size`` ``None`` or equal to it).

    The inference bundles' engine: the checkpoint is read when the workflow runs, so
    ``initialize()`` and ``check_properties()`` work before any training has happened.

    Args:
        ensemble: checkpoints to predict with together instead of ``ckpt_path`` (e.g. every fold's
            ``models/model.pt``): each loaded into a copy of ``network``, their main-head
            probabilities averaged before the argmax, as nnU-Net ensembles its folds. All must
            share one training size and input channel count.
        mirror: test-time mirroring, the probabilities averaged over each slice's flips along H, W
            and both (four forward passes per slice and checkpoint).

    Raises:
        DataError: a ``size`` or input channel count other than the checkpoint's (one line);
            ensemble checkpoints trained at different sizes.
    """
    import copy

    from scribmed.runtime.checkpoint import load_network_weights
    from scribmed.training.inference import predict_cases

    channels = getattr(network, "in_channels", None)
    channels = channels if isinstance(channels, int) else None
    paths = [Path(p) for p in ensemble] or [Path(ckpt_path)]
    sizes = [checkpoint_size(path, size, channels) for path in paths]  # each file read once
    size_hw = sizes[0]
    networks = []
    for i, (path, path_size) in enumerate(zip(paths, sizes)):
        if path_size != size_hw:
            raise DataError(path, f"trained at {_size_text(path_size)}, the ensemble's first checkpoint {paths[0]} at "
                            f"{_size_text(size_hw)}: ensemble checkpoints of one size only")
        net = network if i == len(paths) - 1 else copy.deepcopy(network)
        load_network_weights(net, path)
        networks.append(net.to(device).eval())
    return predict_cases(networks, device=device, size=size_hw, mirror=mirror, **kwargs)


def publish_model(checkpoint: str | Path, model_path: str | Path) -> Optional[Path]:
    """Copy a finished run's selected ``checkpoint`` to ``model_path`` (``<output_dir>/models/model.pt``).

    The MONAI model-zoo file of a bundle run, the one its inference workflow reads by default;
    written atomically and only by the main process (rank 0).

    Returns:
        ``model_path``, or ``None`` on the other ranks.

    Raises:
        DataError: no such checkpoint.
    """
    from scribmed.runtime.distributed import is_main_process

    if not is_main_process():
        return None
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise DataError(checkpoint, f"checkpoint not found, nothing to publish as {model_path}")
    with atomic_output(model_path) as tmp:
        shutil.copyfile(checkpoint, tmp)
    return Path(model_path)


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
