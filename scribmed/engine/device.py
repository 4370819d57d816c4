"""Device selection: one string (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``) to a ``torch.device``.

Mixed precision (AMP) is used on CUDA only; on CPU autocast gives no speed-up for these
networks and ``GradScaler`` is a no-op, so :func:`amp_enabled` turns it off there.
"""

from __future__ import annotations

import torch

__all__ = ["amp_enabled", "resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn a device request into a usable ``torch.device``.

    Args:
        device: ``"auto"``/``None`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"`` or a ``torch.device``.

    Returns:
        The device. ``"cuda"`` without an index becomes ``cuda:<current device>``.

    Raises:
        ValueError: unknown device string, CUDA requested but not available, or an index
            beyond the visible GPUs.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r} (use 'auto', 'cpu', 'cuda' or 'cuda:N'): {exc}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ValueError(f"unsupported device {device!r}: scribmed trains on 'cpu' or 'cuda[:N]'")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine (use 'cpu' or 'auto')")
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device("cuda", index)


def amp_enabled(device: torch.device, requested: bool = True) -> bool:
    """AMP (float16 autocast + GradScaler) only when requested and on CUDA."""
    return bool(requested) and torch.device(device).type == "cuda"
