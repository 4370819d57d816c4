"""Slice-wise volume inference: resize each slice to the network size, predict, resize back.

Matches DMPLS evaluation: every 2D slice of a ``(slices, H, W)`` volume is resized to the
network's input size with the same function the training cache used, the main head predicts
(eval mode, no grad, mixed precision by :func:`~scribmed.runtime.device.amp_policy`), the argmax label map is resized back to ``(H, W)`` with
nearest neighbour, so metrics are computed at the original resolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from scribmed.data.case import Case
from scribmed.data.errors import DataError
from scribmed.runtime.device import AmpRequest, amp_policy, resolve_device
from scribmed.runtime.progress import progress_bar
from scribmed.transforms.resize import resize_back, resize_slices

__all__ = ["MIRROR_AXES", "ensemble_labels", "labels_from_probabilities", "predict_cases", "predict_probabilities", "predict_to_folder",
           "predict_volume", "unwrap_network"]


def unwrap_network(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper (else itself)."""
    inner = getattr(network, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else network


def _network_device(network: torch.nn.Module) -> torch.device:
    for p in network.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def predict_volume(
    network: torch.nn.Module,
    image_shw: np.ndarray,
    size: Sequence[int] = (256, 256),
    batch_size: int = 16,
    device: Optional[str | torch.device] = None,
    amp: AmpRequest = True,
    image_mode: str = "bilinear",
) -> np.ndarray:
    """Predict a label map for every slice of a volume.

    Args:
        network: segmentation network; in eval mode it must return ``(B, classes, h, w)`` logits
            (a tuple/list output uses its first element, the main head). Its train/eval mode is
            restored afterwards.
        image_shw: ``(slices, H, W)`` (or ``(slices, C, H, W)``) image.
        size: network input ``(h, w)``.
        batch_size: slices per forward pass.
        device: where to compute (``"auto"``, ``"cpu"``, ``"cuda:N"``, ...); defaults to the
            network's device. The network is moved there if its parameters live elsewhere.
        amp: mixed precision (``True``/``"auto"``: on CUDA bfloat16 where supported, else
            float16, float32 on a CPU; ``"bf16"`` on CUDA or a CPU with native bfloat16,
            ``"fp16"``, ``False``/``"off"``).
        image_mode: how slices are resized to ``size``, as in training (``"bilinear"`` or
            ``"nearest"``); the label map is resized back with nearest neighbour.

    Returns:
        ``(slices, H, W)`` uint8 label map on the input grid.
    """
    image = np.asarray(image_shw)
    out = np.empty((image.shape[0], *image.shape[-2:]), dtype=np.uint8)
    for start, x, forward in _slice_batches(network, image, size, batch_size, device, amp, image_mode):
        labels = forward(x).argmax(dim=1).to(torch.uint8)
        out[start : start + labels.shape[0]] = resize_back(labels, out.shape[-2:], "nearest").cpu().numpy()
    return out


def _slice_batches(
    network: torch.nn.Module,
    image_shw: np.ndarray,
    size: Sequence[int],
    batch_size: int,
    device: Optional[str | torch.device],
    amp: AmpRequest,
    image_mode: str,
) -> Iterator[tuple[int, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]]:
    """``(first slice index, resized batch, forward)`` for every batch of slices, the network in eval
    mode (restored afterwards) on ``device``; ``forward(x)`` is the main head's logits under the AMP
    policy. What :func:`predict_volume` and :func:`predict_probabilities` share."""
    image = np.asarray(image_shw)
    if image.ndim == 3:
        image = image[:, None]
    if image.ndim != 4:
        raise ValueError(f"expected an image (slices, H, W) or (slices, C, H, W), got shape {image_shw.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    net = unwrap_network(network)
    dev = _network_device(net) if device is None else resolve_device(device)
    if _network_device(net) != dev:
        net.to(dev)
    policy = amp_policy(dev, amp)
    hw = (int(size[0]), int(size[1]))

    def forward(x: torch.Tensor) -> torch.Tensor:
        with policy.autocast():
            logits = net(x)
        return logits[0] if isinstance(logits, (tuple, list)) else logits

    was_training = net.training
    net.eval()
    try:
        for start in range(0, image.shape[0], batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(image[start : start + batch_size], dtype=np.float32))
            yield start, resize_slices(chunk.to(dev, non_blocking=True), hw, image_mode), forward
    finally:
        net.train(was_training)


#: test-time mirroring: every combination of flips over the in-plane axes (W, H), as nnU-Net mirrors
MIRROR_AXES: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


@torch.no_grad()
def predict_probabilities(
    network: torch.nn.Module,
    image_shw: np.ndarray,
    size: Sequence[int] = (256, 256),
    batch_size: int = 16,
    device: Optional[str | torch.device] = None,
    amp: AmpRequest = True,
    image_mode: str = "bilinear",
    mirror: bool = False,
) -> torch.Tensor:
    """Class probabilities of every slice at the network size, the input of an ensemble.

    Slices are resized as :func:`predict_volume` resizes them; the main head's softmax (float32)
    is returned, averaged over the mirrored copies of each slice when ``mirror`` (:data:`MIRROR_AXES`:
    four forward passes per slice, each flipped back before averaging).
    :func:`labels_from_probabilities` of the result is :func:`predict_volume`'s label map.

    Returns:
        ``(slices, classes, h, w)`` float32 tensor on the CPU, ``(h, w) = size``.
    """
    flips = MIRROR_AXES if mirror else MIRROR_AXES[:1]
    chunks = []
    for _, x, forward in _slice_batches(network, image_shw, size, batch_size, device, amp, image_mode):
        total = None
        for axes in flips:
            prob = torch.softmax(forward(torch.flip(x, axes) if axes else x).float(), dim=1)
            prob = torch.flip(prob, axes) if axes else prob
            total = prob if total is None else total + prob
        chunks.append((total / len(flips)).cpu())
    return torch.cat(chunks)


def labels_from_probabilities(probabilities: torch.Tensor, original_hw: Sequence[int]) -> np.ndarray:
    """``(slices, H, W)`` uint8 label map: the argmax of ``(slices, classes, h, w)`` probabilities,
    resized to the slice grid with nearest neighbour (as :func:`predict_volume` does)."""
    labels = probabilities.argmax(dim=1).to(torch.uint8)
    return resize_back(labels, tuple(original_hw), "nearest").cpu().numpy()


def ensemble_labels(probabilities: Iterable[torch.Tensor], original_hw: Sequence[int]) -> np.ndarray:
    """The label map of an ensemble: :func:`labels_from_probabilities` of the mean of its members'
    ``(slices, classes, h, w)`` probabilities (nnU-Net's fold ensemble), summed one at a time."""
    total, count = None, 0
    for prob in probabilities:
        total = prob if total is None else total + prob
        count += 1
    if total is None:
        raise ValueError("an ensemble needs at least one member's probabilities")
    return labels_from_probabilities(total / count, original_hw)


def predict_cases(
    network: torch.nn.Module | Sequence[torch.nn.Module],
    cases: Sequence[Case],
    out_dir: str | Path,
    size: Sequence[int] = (256, 256),
    batch_size: int = 16,
    device: Optional[str | torch.device] = None,
    amp: AmpRequest = True,
    overwrite: bool = False,
    progress: bool = True,
    image_mode: str = "bilinear",
    mirror: bool = False,
) -> list[Path]:
    """Predict each case and write ``<out_dir>/<case_id>.nii.gz`` on the case's grid.

    The written file carries the case's spacing and affine (see
    :func:`scribmed.data.nifti.write_prediction`) and is written atomically; cases whose file
    already exists are skipped unless ``overwrite``, so an interrupted run resumes.

    Args:
        network: segmentation network (see :func:`predict_volume`), or several (an ensemble: their
            main-head probabilities averaged at ``size``, then the argmax resized, as nnU-Net ensembles).
        cases: cases to predict; ``case_id`` names the output file.
        out_dir: output folder (created).
        size, batch_size, device, amp, image_mode: see :func:`predict_volume`.
        overwrite: recompute files that already exist.
        progress: progress bar over cases.
        mirror: average each slice's probabilities over its flips (:data:`MIRROR_AXES`, four forward
            passes per slice and network).

    Returns:
        The prediction paths, one per case, in input order.

    Raises:
        DataError: ``out_dir`` exists and is not a folder; a case cannot be read.
    """
    networks = [network] if isinstance(network, torch.nn.Module) else list(network)
    if not networks:
        raise ValueError("predict_cases needs at least one network")

    def predict(case: Case) -> np.ndarray:
        if len(networks) == 1 and not mirror:
            return predict_volume(
                networks[0], case.image, size=size, batch_size=batch_size, device=device, amp=amp, image_mode=image_mode
            )
        return ensemble_labels((predict_probabilities(net, case.image, size=size, batch_size=batch_size, device=device,
                                                      amp=amp, image_mode=image_mode, mirror=mirror)
                                for net in networks), case.image.shape[-2:])

    return [path for _, path, _ in predict_to_folder(cases, predict, out_dir, overwrite=overwrite, progress=progress)]


def predict_to_folder(
    cases: Sequence[Case],
    predict: Callable[[Case], np.ndarray],
    out_dir: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    dtype: Any = np.uint8,
    suffix: str = ".nii.gz",
    write: Optional[Callable[[Path, Case, np.ndarray], Any]] = None,
) -> Iterator[tuple[Case, Path, Optional[np.ndarray]]]:
    """Write ``predict(case)`` as ``<out_dir>/<case_id>.nii.gz`` (or ``write``'s format) on each case's grid.

    The one writing loop behind :func:`predict_cases`, the CV runner and ``scribmed predict``:
    files carry the case's spacing and affine and are written atomically; a file that already
    exists is kept (unless ``overwrite``), so an interrupted run resumes.

    ``dtype`` is the integer type predictions are cast to: ``uint8`` for label maps, ``int32``
    for instance maps (the file stores them compactly). ``write(path, case, prediction)``
    replaces the NIfTI writer for another format, whose files are ``<case_id><suffix>`` (e.g.
    DICOM-SEG, ``.dcm``); it must write atomically too.

    Yields:
        ``(case, path, prediction)``; ``prediction`` is ``None`` when an existing file was kept.

    Raises:
        DataError: ``out_dir`` exists and is not a folder; a case cannot be read.
    """
    from scribmed.data.nifti import write_prediction

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(out_dir, "prediction output path exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    for case in progress_bar(cases, desc="predicting", unit="case", disable=not progress):
        path = out_dir / f"{case.case_id}{suffix}"
        if path.exists() and not overwrite:
            yield case, path, None
            continue
        pred = np.asarray(predict(case), dtype=dtype)
        if write is None:
            write_prediction(path, pred, case.spacing, case.affine)
        else:
            write(path, case, pred)
        yield case, path, pred
