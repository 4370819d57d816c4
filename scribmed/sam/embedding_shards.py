"""Fill one SAM embedding cache from several jobs: ``--shard I/N`` splits the cases.

Each of ``N`` jobs (processes, machines sharing the folder) encodes its ``I``-th share of the
cases into the same :class:`~scribmed.sam.embedding_cache.EmbeddingCache`; the cache's locks make
overlapping or repeated jobs safe (a case is encoded once, the others read it). The shares are
deterministic (sorted by case id, taken round-robin), so every job computes the same split
without talking to the others: disjoint, balanced (sizes differ by at most one) and together
every case.

    from scribmed.sam.embedding_shards import encode_shard
    encode_shard("lite_medsam", dataset.cases_of(patients), "runs/cache/sam", "2/4")
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar, Union

from scribmed.runtime.progress import progress_bar

T = TypeVar("T")
Shard = tuple[int, int]
PathLike = Union[str, Path]

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> Shard:
    """``"I/N"`` (1-based, ``1 <= I <= N``) as ``(I, N)``.

    Raises:
        ValueError: anything else, with a message naming the expected form.
    """
    m = _SHARD.match(str(text))
    if m is not None:
        i, n = int(m.group(1)), int(m.group(2))
        if 1 <= i <= n:
            return i, n
    raise ValueError(f"--shard must be I/N with 1 <= I <= N, like 2/4, got {str(text)!r}")


def _check_shard(shard: Union[Shard, str]) -> Shard:
    if isinstance(shard, str):
        return parse_shard(shard)
    try:
        i, n = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be (I, N) or 'I/N' with 1 <= I <= N, got {shard!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"--shard must be I/N with 1 <= I <= N, like 2/4, got '{i}/{n}'")
    return i, n


def _case_key(item: Any) -> str:
    return str(getattr(item, "case_id", item))


def shard_items(items: Sequence[T], shard: Union[Shard, str], key: Optional[Callable[[T], Any]] = None) -> list[T]:
    """The ``I``-th of ``N`` shares of ``items``: sorted by ``key`` (default: ``case_id``, else ``str``), every N-th.

    Deterministic and independent of the input order, so separate jobs agree on the split: the
    shares are disjoint, their union is ``items`` and their sizes differ by at most one.
    """
    i, n = _check_shard(shard)
    ordered = sorted(items, key=key or _case_key)
    return ordered[i - 1 :: n]


def encode_shard(
    backend: Any,
    cases: Sequence[Any],
    cache_dir: PathLike,
    shard: Union[Shard, str] = (1, 1),
    progress: bool = True,
    *,
    checkpoint: Optional[PathLike] = None,
    device: str = "cpu",
    encoder_runtime: str = "torch",
    encoder_cache: Optional[PathLike] = None,
    backend_options: Optional[Mapping[str, Any]] = None,
    batch_size: int = 4,
    dtype: str = "float16",
) -> dict[str, Any]:
    """Encode this shard's cases into the embedding cache at ``cache_dir``; returns the stats.

    Args:
        backend: a SAM backend object, or a backend name for
            :func:`~scribmed.networks.sam_registry.build_sam_backend` (built with ``checkpoint``,
            ``device``, ``encoder_runtime``, ``encoder_cache`` and any further keyword arguments in
            ``backend_options``; all of these are ignored for a backend object).
        cases: all cases (every job passes the same list); this job takes :func:`shard_items` of them.
        cache_dir: the cache root, as :class:`~scribmed.sam.embedding_cache.EmbeddingCache`'s ``root``
            (the pseudo-label rounds use their ``cache_dir``, default ``<out>/embeddings``).
        shard: ``(I, N)`` or ``"I/N"``; ``(1, 1)`` is every case.
        progress: progress bars.
        batch_size / dtype: as for :class:`EmbeddingCache` (keep the defaults to fill the cache
            the rounds read: ``dtype`` is part of the cache's folder name).

    Returns:
        ``{"shard": "I/N", "cases": k, "hits", "misses", "slices_encoded", "directory"}``: hits are
        cases found on disk (also those another job finished while this one waited for it).
    """
    i, n = _check_shard(shard)
    if isinstance(backend, str):
        from scribmed.networks.sam_registry import build_sam_backend

        backend = build_sam_backend(backend, checkpoint=checkpoint, device=device,
                                    encoder_runtime=encoder_runtime, encoder_cache=encoder_cache,
                                    **dict(backend_options or {}))
    from scribmed.sam.embedding_cache import EmbeddingCache

    mine = shard_items(list(cases), (i, n))
    cache = EmbeddingCache(cache_dir, backend, batch_size=batch_size, dtype=dtype, progress=progress)
    for case in progress_bar(mine, desc=f"SAM embeddings (shard {i}/{n})", unit="case", leave=False,
                             disable=not progress or len(mine) <= 1):
        loaded = getattr(case, "_cache", None) is not None
        cache.get(case)
        cache._open.pop(case.case_id, None)  # keep no memmap per case open: a shard may be large
        if not loaded and hasattr(case, "release"):
            case.release()  # read for encoding only: don't hold every image of the shard in memory
    return {"shard": f"{i}/{n}", "cases": len(mine), **cache.stats(), "directory": str(cache.directory)}


__all__ = ["encode_shard", "parse_shard", "shard_items"]
