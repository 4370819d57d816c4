"""Fine-tuned mask-decoder files: ``decoder_best.pt`` / ``decoder_last.pt``, saving and loading.

Files are written to a temporary name and renamed, and read with
``torch.load(..., weights_only=True)``; the weights sit under ``"model"`` with
``mask_decoder.`` keys, so a saved decoder is also a ``build_sam_backend(...,
checkpoint=...)`` file. They carry the ``scribmed.sam_decoder`` schema
(:mod:`scribmed.runtime.records`); older ones are upgraded where they are read
(:func:`scribmed.runtime.migrations.upgrade_sam_decoder_checkpoint`). Kept apart from the training
loop (:mod:`scribmed.sam.decoder_finetune`), which writes these files every epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Union

import torch

from scribmed.data.errors import DataError
from scribmed.runtime.files import atomic_output
from scribmed.runtime.migrations import upgrade_sam_decoder_checkpoint
from scribmed.runtime.records import SAM_DECODER, stamp
from scribmed.networks.sam_checkpoint import read_state_dict

PathLike = Union[str, Path]
DECODER_BEST = "decoder_best.pt"
DECODER_LAST = "decoder_last.pt"


def decoder_state_path(out_dir: PathLike, which: str = "best") -> Path:
    """``out_dir/decoder_best.pt`` (``which="best"``) or ``out_dir/decoder_last.pt`` (``"last"``)."""
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    return Path(out_dir) / (DECODER_BEST if which == "best" else DECODER_LAST)


# ------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------


def _atomic_save(payload: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` ``payload`` stamped with the decoder schema to a temporary file in the same
    folder, then rename (umask permissions)."""
    with atomic_output(path) as tmp:
        torch.save(stamp(SAM_DECODER, payload), tmp)


def _decoder_weights(backend: Any) -> dict[str, torch.Tensor]:
    return {f"mask_decoder.{k}": v.detach().cpu().clone() for k, v in backend.mask_decoder.state_dict().items()}


def save_decoder(backend: Any, path: PathLike, **meta: Any) -> Path:
    """Write the backend's mask decoder (+ ``meta``: plain values only) atomically to ``path``.

    The weights sit under ``"model"`` with ``mask_decoder.`` keys, so the file is also a valid
    ``build_sam_backend(name, checkpoint=path)`` checkpoint for LiteMedSAM (decoder on top of
    the packaged weights).
    """
    path = Path(path)
    payload = {"backend": getattr(backend, "name", None), "model": _decoder_weights(backend)}
    payload.update(meta)
    _atomic_save(payload, path)
    return path


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """The file's dict, a decoder file of an older schema upgraded to the current one."""
    if not path.is_file():
        raise DataError(path, "decoder checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(path, f"cannot read decoder checkpoint with weights_only=True: {msg[:160]}") from None
    if not isinstance(obj, dict):
        raise DataError(path, f"decoder checkpoint holds a {type(obj).__name__}, expected a dict")
    return upgrade_sam_decoder_checkpoint(obj, path)


def load_decoder(backend: Any, path: PathLike) -> dict[str, Any]:
    """Load a fine-tuned mask decoder into ``backend`` (read with ``weights_only=True``).

    Accepts the files written here, any SAM-style checkpoint with ``mask_decoder.*`` keys, or a
    bare ``mask_decoder.state_dict()``.

    Returns:
        The file's metadata (non-weight top-level entries, e.g. ``epoch``, ``val_dice``,
        ``config``); ``{}`` for a bare state dict.

    Raises:
        DataError: missing/unreadable file, no decoder weights, or weights that do not fit.
    """
    path = Path(path)
    state = read_state_dict(path)
    prefix = "mask_decoder."
    decoder = {k.split(prefix, 1)[1]: v for k, v in state.items() if prefix in k}
    if not decoder:
        own = set(backend.mask_decoder.state_dict())
        bare = {k.removeprefix("module."): v for k, v in state.items()}
        if not own & set(bare):
            raise DataError(path, f"no mask decoder weights found ({len(state)} tensors)")
        decoder = bare
    own = backend.mask_decoder.state_dict()
    missing = len(set(own) - set(decoder))
    unexpected = len(set(decoder) - set(own))
    mis_shaped = sum(1 for k in set(own) & set(decoder) if tuple(own[k].shape) != tuple(decoder[k].shape))
    if missing or unexpected or mis_shaped:
        raise DataError(
            path,
            f"decoder weights do not fit backend {getattr(backend, 'name', '?')}: {missing} missing, "
            f"{unexpected} unexpected, {mis_shaped} shape-mismatched keys",
        )
    backend.mask_decoder.load_state_dict(decoder, strict=True)
    meta = _read_checkpoint(path)
    return {
        k: v for k, v in meta.items()
        if k not in ("model", "optimizer", "rng") and not isinstance(v, torch.Tensor)
    }


__all__ = [
    "DECODER_BEST",
    "DECODER_LAST",
    "decoder_state_path",
    "load_decoder",
    "save_decoder",
]
