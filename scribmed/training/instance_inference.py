"""Whole-image prediction of the instance recipes' contour U-Net.

Images are per-channel z-scored (:func:`normalise_image`) for training and prediction; the
network's three-class softmax (background, interior, boundary) becomes an instance map by the
recipe's post-processing (:func:`~scribmed.transforms.instance_postprocess.instances_from_contours`).
"""

from __future__ import annotations

import numpy as np
import torch

from scribmed.transforms.instance_postprocess import instances_from_contours

__all__ = ["normalise_image", "predict_instances", "predict_probabilities"]


def normalise_image(image: np.ndarray) -> np.ndarray:
    """A case image ``(1, H, W)`` / ``(1, C, H, W)`` / ``(H, W)`` → ``(C, H, W)`` float32, z-scored per channel."""
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    elif x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    elif x.ndim == 3 and x.shape[0] != 1 and x.shape[0] not in (3,):
        raise ValueError(f"expected one 2D image (1, H, W) or (1, C, H, W), got {x.shape}")
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    return ((x - mean) / np.maximum(std, 1e-6)).astype(np.float32)


@torch.no_grad()
def predict_probabilities(network: torch.nn.Module, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Softmax ``(3, H, W)`` of a normalised image ``(C, H, W)`` (padded to the U-Net's divisor)."""
    network.eval()
    d = getattr(network, "divisor", 16)
    c, h, w = image.shape
    ph, pw = (-h) % d, (-w) % d
    x = np.pad(image, ((0, 0), (0, ph), (0, pw)), mode="reflect") if (ph or pw) else image
    logits = network(torch.from_numpy(np.ascontiguousarray(x))[None].to(device))
    return torch.softmax(logits.float(), 1)[0, :, :h, :w].cpu().numpy()


def predict_instances(
    network: torch.nn.Module, image: np.ndarray, device: torch.device, postprocess: str = "watershed",
    min_size: int = 10,
) -> np.ndarray:
    """``(H, W)`` int32 instance map of a normalised image ``(C, H, W)``."""
    return instances_from_contours(predict_probabilities(network, image, device), mode=postprocess, min_size=min_size)
