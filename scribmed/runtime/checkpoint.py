"""Training checkpoints: written atomically, loaded with ``weights_only=True``, identified by sha256.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(..., weights_only=True)`` can read it and a file from elsewhere never executes code.
RNG states are stored as tensors and lists for the same reason. Files are written
to a temporary name in the same folder and renamed, so a crash never leaves a truncated
``last.pt``. Writers stamp the payload with the checkpoint schema
(``stamp(CHECKPOINT, payload)``, :mod:`scribmed.runtime.records`); :func:`load_checkpoint`
upgrades older checkpoints to it (:func:`scribmed.runtime.migrations.upgrade_checkpoint`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from scribmed.data.errors import DataError
from scribmed.runtime.files import atomic_output, file_sha256
from scribmed.runtime.migrations import upgrade_checkpoint

__all__ = [
    "capture_rng_state",
    "load_checkpoint",
    "load_network_weights",
    "restore_rng_state",
    "save_checkpoint",
]

def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> str:
    """Write ``payload`` with ``torch.save`` to a temporary file, then rename it onto ``path``.

    The same payload always gives the same bytes (and sha256): the archive does not carry the
    temporary file's name.

    Returns:
        The sha256 of the written file.
    """
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:  # to a file object: torch would record the temporary name in the archive
            torch.save(dict(payload), fh)
        digest = file_sha256(tmp)
    return digest


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``), upgraded to the current schema.

    A scribmed checkpoint of an older version comes back in the current one
    (:func:`~scribmed.runtime.migrations.upgrade_checkpoint`); other dicts (a bare state dict)
    as they are.

    Raises:
        DataError: missing file, a file that is not a torch checkpoint, one that needs
            arbitrary code to unpickle, or one of a newer or unknown schema.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(path, f"cannot load checkpoint with weights_only=True: {msg}") from None
    if not isinstance(obj, dict):
        raise DataError(path, f"checkpoint holds a {type(obj).__name__}, expected a dict")
    return upgrade_checkpoint(obj, path)


def load_network_weights(network: torch.nn.Module, path: str | Path, strict: bool = True) -> dict[str, Any]:
    """Load the ``network`` entry of a scribmed checkpoint (or a bare state dict) into ``network``.

    Returns:
        The whole checkpoint dict (for its config, metrics, ...).

    Raises:
        DataError: unreadable checkpoint or weights that do not fit ``network``.
    """
    ckpt = load_checkpoint(path)
    state = ckpt.get("network", ckpt)
    if not isinstance(state, dict):
        raise DataError(path, "checkpoint has no 'network' state dict")
    target = network.module if hasattr(network, "module") and isinstance(network.module, torch.nn.Module) else network
    try:
        target.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise DataError(path, f"weights do not fit the network: {str(exc).splitlines()[0]}") from None
    return ckpt


def capture_rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), numpy and Python RNG states as weights_only-safe objects."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states are restored when CUDA is in use)."""
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    nps = state["numpy"]
    np.random.set_state(
        ("MT19937", nps["keys"].numpy().astype(np.uint32), int(nps["pos"]), int(nps["has_gauss"]), float(nps["cached_gaussian"]))
    )
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu().to(torch.uint8) for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
