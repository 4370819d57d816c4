"""On-disk, memory-mapped cache of SAM image embeddings: the frozen encoder runs once per slice.

Layout under ``root``::

    root/<backend.cache_key>-<dtype>/
        index.json                          human/tool listing (written atomically)
        <case_id>__<fingerprint[:16]>.npy   (slices, *backend.embedding_shape) embeddings, one file per case

A case's file name carries the fingerprint of its source, the directory carries the backend's
``cache_key`` (name + encoder weights SHA-256 + preprocessing version) and the storage dtype, so
a changed source file, other weights or other preprocessing simply miss and are recomputed. A
file is written under a temporary name and renamed only when complete, so an interrupted run
never leaves a file that looks finished; the name alone decides a hit (the index is advisory
and rebuilt from the files), which also makes concurrent processes safe.

The embedding shape is the backend's (``(256, 64, 64)`` for the SAM 1 family; SAM2 backends pack
the image embedding and their high-resolution features into ``(1024, 64, 64)``); nothing here
assumes a size.

Storage is float16 by default: SAM-family embeddings are small (|x| < ~10, LiteMedSAM < 1), so
the relative rounding error is ~5e-4, which moves the decoder's logits by ~1e-3 and leaves the
thresholded masks unchanged in practice (see tests/test_embedding_cache.py), at half the disk
and page-cache footprint (SAM 1: 2 MiB instead of 4 MiB per slice, ~4 GB for all of ACDC; SAM2:
8 MiB instead of 16 MiB).

The fingerprint is ``(resolved path, size, mtime_ns)`` of ``case.source`` when it is an existing
file, else a SHA-256 of the image array (in-memory / phantom cases).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch

from scribmed.files import atomic_output, atomic_write_text

PathLike = Union[str, Path]
_DTYPES = {"float16": np.float16, "float32": np.float32}
INDEX_NAME = "index.json"


class EmbeddingCache:
    """Memory-mapped SAM embeddings per case, computed on first use.

    Args:
        root: cache folder (e.g. ``runs/cache/sam``); created if needed. Never a dataset folder.
        backend: a :class:`~scribmed.networks.sam_backends.SamBackend` (anything with
            ``cache_key``, ``embedding_shape``, ``preprocess`` and ``encode``).
        batch_size: slices per encoder call when computing a case.
        dtype: ``"float16"`` (default) or ``"float32"`` storage.
        fingerprint: ``"auto"`` (file stat when ``case.source`` is a file, else content hash),
            ``"stat"`` or ``"content"`` (always hash the image array; slower, exact).
        progress: show tqdm bars while computing.

    Attributes:
        hits / misses: cases served from disk / computed, since construction.
        slices_encoded: slices this instance passed through the encoder.
        directory: ``root/<cache_key>-<dtype>``.
    """

    def __init__(
        self,
        root: PathLike,
        backend: Any,
        batch_size: int = 4,
        dtype: str = "float16",
        fingerprint: str = "auto",
        progress: bool = True,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if fingerprint not in ("auto", "stat", "content"):
            raise ValueError(f"fingerprint must be 'auto', 'stat' or 'content', got {fingerprint!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.root = Path(root)
        self.backend = backend
        self.batch_size = int(batch_size)
        self.dtype = dtype
        self.fingerprint_mode = fingerprint
        self.progress = progress
        self.directory = self.root / f"{_safe(backend.cache_key)}-{dtype}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self.slices_encoded = 0
        self._open: dict[str, tuple[str, np.ndarray]] = {}

    # ---------------------------------------------------------------------- keys

    def fingerprint(self, case: Any) -> tuple[str, dict[str, Any]]:
        """``(hex digest, description)`` identifying the case's image source."""
        source = getattr(case, "source", None)
        path = Path(source) if source is not None else None
        use_stat = self.fingerprint_mode == "stat" or (
            self.fingerprint_mode == "auto" and path is not None and path.is_file()
        )
        if use_stat:
            if path is None or not path.exists():
                raise FileNotFoundError(f"{path}: case {case.case_id} has no source file to fingerprint")
            st = path.stat()
            desc = {"kind": "stat", "path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
            text = f"{case.case_id}|{desc['path']}|{st.st_size}|{st.st_mtime_ns}"
            return hashlib.sha256(text.encode()).hexdigest(), desc
        image = np.ascontiguousarray(case.image)
        h = hashlib.sha256(f"{case.case_id}|{image.shape}|{image.dtype.str}|".encode())
        h.update(memoryview(image).cast("B"))  # ~5 ms for a 10x256x256 float32 volume
        digest = h.hexdigest()
        return digest, {"kind": "content", "sha256": digest, "shape": list(image.shape)}

    def path_for(self, case: Any) -> Path:
        """Where the case's embeddings are (or will be) stored."""
        digest, _ = self.fingerprint(case)
        return self.directory / f"{_safe(case.case_id)}__{digest[:16]}.npy"

    # ---------------------------------------------------------------------- API

    def get(self, case: Any) -> np.ndarray:
        """The case's embeddings ``(slices, *embedding_shape)`` as a read-only memmap (computed if missing)."""
        digest, desc = self.fingerprint(case)
        held = self._open.get(case.case_id)
        if held is not None and held[0] == digest:
            self.hits += 1
            return held[1]
        path = self.directory / f"{_safe(case.case_id)}__{digest[:16]}.npy"
        arr = self._open_valid(path)
        if arr is None:
            self._compute(case, path, desc)
            self.misses += 1
            arr = self._open_valid(path)
            if arr is None:  # pragma: no cover - the file was just written
                raise RuntimeError(f"{path}: embeddings vanished right after being written")
        else:
            self.hits += 1
        self._open[case.case_id] = (digest, arr)
        return arr

    def slice(self, case: Any, z: int) -> torch.Tensor:
        """Embedding of slice ``z`` as a float32 tensor ``(1, *embedding_shape)`` on the backend's device."""
        arr = self.get(case)
        if not -arr.shape[0] <= int(z) < arr.shape[0]:
            raise IndexError(f"case {case.case_id} has {arr.shape[0]} slices, asked for slice {z}")
        out = torch.from_numpy(np.array(arr[int(z)], dtype=np.float32))[None]
        device = getattr(self.backend, "device", None)
        return out if device is None else out.to(device)

    def precompute(self, cases: Iterable[Any]) -> dict[str, int]:
        """Make sure every case is cached (e.g. before training); returns :meth:`stats`."""
        cases = list(cases)
        iterator: Iterable[Any] = cases
        if self.progress and len(cases) > 1:
            from tqdm.auto import tqdm

            iterator = tqdm(cases, desc="SAM embeddings", unit="case", leave=False)
        for case in iterator:
            self.get(case)
        return self.stats()

    def stats(self) -> dict[str, int]:
        """``{"hits", "misses", "slices_encoded"}`` since construction."""
        return {"hits": self.hits, "misses": self.misses, "slices_encoded": self.slices_encoded}

    def index(self) -> dict[str, Any]:
        """The index JSON as a dict (``{}`` when absent or unreadable)."""
        try:
            return json.loads((self.directory / INDEX_NAME).read_text())
        except (OSError, ValueError):
            return {}

    # ---------------------------------------------------------------------- internals

    def _open_valid(self, path: Path) -> Optional[np.ndarray]:
        if not path.is_file():
            return None
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            return None
        if arr.ndim != 4 or tuple(arr.shape[1:]) != tuple(self.backend.embedding_shape) or arr.dtype != _DTYPES[self.dtype]:
            return None
        return arr

    def _compute(self, case: Any, path: Path, desc: dict[str, Any]) -> None:
        image = np.asarray(case.image)
        if image.ndim == 2:
            image = image[None]
        rgb = image.ndim == 4 and image.shape[1] == 3  # (slices, 3, H, W): RGB, see SamBackend.preprocess
        if (image.ndim != 3 and not rgb) or image.shape[0] == 0:
            raise ValueError(f"case {case.case_id}: expected an image (slices, H, W) or (slices, 3, H, W), "
                             f"got shape {image.shape}")
        n = image.shape[0]
        with atomic_output(path) as tmp:
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=_DTYPES[self.dtype], shape=(n, *self.backend.embedding_shape)
            )
            starts: Iterable[int] = range(0, n, self.batch_size)
            if self.progress and n > self.batch_size:
                from tqdm.auto import tqdm

                starts = tqdm(list(starts), desc=f"encoding {case.case_id}", unit="batch", leave=False)
            for s in starts:
                emb = self.backend.encode(self.backend.preprocess(image[s : s + self.batch_size]))
                block = emb.detach().float().cpu().numpy()
                stored = block.astype(out.dtype)
                if not np.isfinite(stored).all():
                    raise ValueError(
                        f"case {case.case_id}: embeddings overflow {self.dtype}; use dtype='float32'"
                    )
                out[s : s + block.shape[0]] = stored
                self.slices_encoded += int(block.shape[0])
            out.flush()
            del out
        self._remove_stale(case.case_id, keep=path)
        self._update_index(case.case_id, path, n, desc)

    def _remove_stale(self, case_id: str, keep: Path) -> None:
        """Delete older embeddings of the same case (other source fingerprints)."""
        pattern = re.compile(rf"^{re.escape(_safe(case_id))}__[0-9a-f]{{16}}\.npy$")
        for old in self.directory.iterdir():
            if old != keep and pattern.match(old.name):
                old.unlink(missing_ok=True)

    def _update_index(self, case_id: str, path: Path, n: int, desc: dict[str, Any]) -> None:
        idx = self.index()
        entries = {
            k: v for k, v in idx.get("cases", {}).items()
            if isinstance(v, dict) and (self.directory / str(v.get("file", ""))).is_file()
        }
        entries[str(case_id)] = {"file": path.name, "slices": n, "source": desc, "written": time.time()}
        doc = {
            "cache_key": self.backend.cache_key,
            "dtype": self.dtype,
            "embedding_shape": list(self.backend.embedding_shape),
            "cases": dict(sorted(entries.items())),
        }
        atomic_write_text(self.directory / INDEX_NAME, json.dumps(doc, indent=1))


def _safe(text: str) -> str:
    """A file-name-safe version of ``text`` (keeps letters, digits, ``._-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip(".") or "_"


__all__ = ["EmbeddingCache"]
