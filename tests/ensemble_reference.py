"""The expected output of a fold ensemble with test-time mirroring, computed without scribmed's
inference code, for the tests of ``predict --run``, ``predict_cases`` and the bundles' ``ensemble``.

Import with ``from ensemble_reference import ensemble_label_map`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from scribmed.transforms.resize import resize_slices

FLIPS = [(), (-1,), (-2,), (-2, -1)]


def mean_probabilities(network: torch.nn.Module, image: np.ndarray, size: Sequence[int], mirror: bool) -> torch.Tensor:
    """``(slices, classes, h, w)``: the main head's softmax at ``size`` (bilinear input resize),
    averaged over the flips along H, W and both when ``mirror``, each flipped back."""
    x = resize_slices(torch.from_numpy(np.asarray(image, dtype=np.float32)[:, None]), tuple(size), "bilinear")
    probs = []
    with torch.no_grad():
        network.eval()
        for axes in FLIPS if mirror else FLIPS[:1]:
            out = network(torch.flip(x, axes) if axes else x)
            p = torch.softmax((out[0] if isinstance(out, (tuple, list)) else out).float(), dim=1)
            probs.append(torch.flip(p, axes) if axes else p)
    return torch.stack(probs).mean(0)


def ensemble_label_map(networks: Sequence[torch.nn.Module], image: np.ndarray, size: Sequence[int],
                       mirror: bool) -> np.ndarray:
    """``(slices, H, W)`` uint8: the argmax of the networks' mean probabilities, resized to the image
    grid with nearest neighbour."""
    mean = sum(mean_probabilities(net, image, size, mirror) for net in networks) / len(networks)
    labels = F.interpolate(mean.argmax(1, keepdim=True).float(), size=np.asarray(image).shape[-2:], mode="nearest")
    return labels[:, 0].to(torch.uint8).numpy()
