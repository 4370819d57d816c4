"""Device selection and the mixed-precision (AMP) and data-loader policy of every trainer.

:func:`resolve_device` turns one string (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``) into a
``torch.device``.

Mixed precision is one policy for the segmentors (training, validation, inference), SAM's image
encoder and SAM mask-decoder fine-tuning: :func:`amp_policy` maps a device and a request to an
:class:`AmpPolicy` whose :meth:`~AmpPolicy.autocast` and :meth:`~AmpPolicy.grad_scaler` every
caller uses. Requests (``amp`` options; a bool is accepted as before):

* ``"auto"`` / ``True`` (the default of the training configs): on CUDA bfloat16 when the GPU
  computes it natively (``torch.cuda.is_bf16_supported``: Ampere and later), else float16 with a
  ``GradScaler``;
* ``"bf16"`` / ``"fp16"``: that type on CUDA (``"bf16"`` on a GPU without native bfloat16 is an
  error);
* ``"off"`` / ``False``: float32.

On the CPU, ``"bf16"`` autocasts in bfloat16 where the CPU computes it natively
(:func:`cpu_has_native_bf16`: AVX512-BF16 or AMX, e.g. Xeon Sapphire Rapids and later) and is an
error elsewhere (emulated bfloat16 is several times slower than float32: 49.7 s against 5.9 s for a
DMPLS step on an AVX2 EPYC). ``"auto"`` stays float32 on every CPU: bfloat16 training has not yet
been checked against float32 on the parity budget (three seeds each,
``benchmarks/dmpls_parity.py --variants lr_horizon+bilinear_up+channels_last,lr_horizon+bilinear_up+channels_last+bf16``), so a CPU run computes what it
always computed unless bfloat16 is asked for. ``"fp16"`` is float32 on the CPU (no float16 CPU
kernels worth using). float16 gets a ``GradScaler`` (its gradients underflow without loss
scaling); bfloat16 has float32's range and needs none.

:func:`loader_options` is the DataLoader policy: worker processes and pinned memory on CUDA,
none on the CPU (the training datasets are keyed, so results never depend on it).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, ContextManager, Optional, Union

import torch

__all__ = [
    "AMP_MODES",
    "AmpPolicy",
    "amp_dtype",
    "amp_enabled",
    "amp_mode",
    "amp_policy",
    "cpu_has_native_bf16",
    "loader_options",
    "resolve_device",
    "thread_share",
    "usable_cores",
]

#: what an ``amp`` option may say (besides ``True`` = ``"auto"`` and ``False`` = ``"off"``)
AMP_MODES = ("auto", "bf16", "fp16", "off")
_ALIASES = {"true": "auto", "on": "auto", "yes": "auto", "1": "auto", "false": "off", "no": "off", "0": "off",
            "none": "off", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
AmpRequest = Union[bool, str, torch.dtype, None]
#: DataLoader workers per process on CUDA when the config leaves it to scribmed
CUDA_LOADER_WORKERS = 4


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


def amp_mode(requested: AmpRequest = True) -> str:
    """The canonical mode of an ``amp`` request: ``"auto"``, ``"bf16"``, ``"fp16"`` or ``"off"``.

    ``True`` is ``"auto"``, ``False``/``None`` ``"off"``; ``torch.bfloat16`` / ``torch.float16`` and
    the strings ``"true"``/``"false"``/``"bfloat16"``/``"float16"`` are accepted too.

    Raises:
        ValueError: anything else.
    """
    if requested is None or isinstance(requested, bool):
        return "auto" if requested else "off"
    if isinstance(requested, torch.dtype):
        if requested in (torch.bfloat16, torch.float16):
            return "bf16" if requested == torch.bfloat16 else "fp16"
        if requested == torch.float32:
            return "off"
    elif isinstance(requested, str):
        mode = requested.strip().lower()
        mode = _ALIASES.get(mode, mode)
        if mode in AMP_MODES:
            return mode
    raise ValueError(f"amp must be one of {', '.join(AMP_MODES)} (or true/false), got {requested!r}")


def _native_bf16() -> bool:
    try:  # torch >= 2.3: do not count bfloat16 emulated on older GPUs
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # pragma: no cover - older torch
        return bool(torch.cuda.is_bf16_supported())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX tiles), as oneDNN uses it.

    Without either, bfloat16 kernels are emulated and slower than float32, so the policy refuses them.
    """
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(callable(c) for c in checks):
        return any(bool(c()) for c in checks if callable(c))
    try:  # pragma: no cover - torch without the probes: read the flags (Linux)
        flags = open("/proc/cpuinfo", encoding="ascii", errors="replace").read()
    except OSError:  # pragma: no cover
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags  # pragma: no cover


@dataclass(frozen=True)
class AmpPolicy:
    """What mixed precision does on one device: the autocast dtype (``None``: float32) and its scaler.

    Attributes:
        device_type: ``"cuda"`` or ``"cpu"``.
        dtype: ``torch.bfloat16``, ``torch.float16`` or ``None`` (AMP off).
    """

    device_type: str
    dtype: Optional[torch.dtype] = None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def name(self) -> str:
        """``"bf16"``, ``"fp16"`` or ``"off"`` (e.g. for cache keys and reports)."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "off")  # type: ignore[arg-type]

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self) -> ContextManager[Any]:
        """``torch.autocast`` in :attr:`dtype`; a no-op context when AMP is off (an outer autocast stays)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> Optional["torch.amp.GradScaler"]:
        """A fresh ``GradScaler`` for float16; ``None`` for bfloat16 and float32 (no loss scaling needed)."""
        return torch.amp.GradScaler(self.device_type) if self.needs_scaler else None


def amp_policy(device: Union[str, torch.device], requested: AmpRequest = True) -> AmpPolicy:
    """The mixed-precision policy of ``requested`` (see the module docstring) on ``device``.

    CUDA: ``auto`` → bfloat16 where the GPU has it natively, else float16 (+ ``GradScaler``);
    ``bf16`` / ``fp16`` as asked; ``off`` float32. CPU: ``bf16`` → bfloat16 where the CPU has it
    natively (:func:`cpu_has_native_bf16`); ``auto``, ``fp16`` and ``off`` → float32.

    Raises:
        ValueError: an unknown request, or ``"bf16"`` on a GPU or CPU without native bfloat16.
    """
    mode = amp_mode(requested)
    dev = torch.device(device)
    if mode == "off":
        return AmpPolicy(dev.type, None)
    if dev.type != "cuda":
        if mode != "bf16":
            return AmpPolicy(dev.type, None)
        if not cpu_has_native_bf16():
            raise ValueError("amp 'bf16' asked for, but this CPU has no native bfloat16 (AVX512-BF16 or AMX); "
                             "emulated it is slower than float32: use amp 'auto' or 'off'")
        return AmpPolicy(dev.type, torch.bfloat16)
    if mode == "fp16":
        return AmpPolicy("cuda", torch.float16)
    if mode == "bf16":
        if not _native_bf16():
            raise ValueError(f"amp 'bf16' asked for, but {dev} has no native bfloat16; use amp 'auto' or 'fp16'")
        return AmpPolicy("cuda", torch.bfloat16)
    return AmpPolicy("cuda", torch.bfloat16 if _native_bf16() else torch.float16)


def amp_dtype(device: Union[str, torch.device], requested: AmpRequest = True) -> Optional[torch.dtype]:
    """The autocast dtype of :func:`amp_policy` (``None``: AMP off)."""
    return amp_policy(device, requested).dtype


def amp_enabled(device: torch.device, requested: AmpRequest = True) -> bool:
    """Whether :func:`amp_policy` autocasts on ``device``."""
    return amp_policy(device, requested).enabled


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def thread_share(workers: int, total: Optional[int] = None) -> int:
    """Intra-op threads for each of ``workers`` processes sharing this process's threads.

    ``total`` defaults to ``torch.get_num_threads()`` (the cores, or ``OMP_NUM_THREADS`` when set),
    so two workers on a 2-core machine get one thread each instead of two each (oversubscribed).
    """
    total = torch.get_num_threads() if total is None else int(total)
    return max(1, total // max(1, int(workers)))


def loader_options(device: Union[str, torch.device], num_workers: Optional[int] = None,
                   world_size: int = 1) -> dict[str, Any]:
    """``num_workers`` / ``pin_memory`` / ``persistent_workers`` of a training DataLoader on ``device``.

    ``num_workers=None`` (the configs' default, ``"auto"`` accepted): 0 on the CPU (the loader runs
    in the training process, as always), on CUDA ``min(4, usable cores // world_size)`` worker
    processes so batches are prepared while the GPU computes. An int is used as given. Memory is
    pinned on CUDA; workers stay alive between engine epochs. The datasets draw every slice and
    augmentation from its key, so the batches do not depend on any of this.
    """
    dev = torch.device(device)
    if num_workers is None or (isinstance(num_workers, str) and num_workers.strip().lower() == "auto"):
        if dev.type == "cuda":
            num_workers = min(CUDA_LOADER_WORKERS, usable_cores() // max(1, int(world_size)))
        else:
            num_workers = 0
    workers = int(num_workers)
    if workers < 0:
        raise ValueError(f"num_workers must be >= 0 or None (auto), got {num_workers}")
    return {"num_workers": workers, "pin_memory": dev.type == "cuda", "persistent_workers": workers > 0}
