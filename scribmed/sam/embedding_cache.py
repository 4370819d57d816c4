"""On-disk, memory-mapped cache of SAM image embeddings: the frozen encoder runs once per slice.

Layout under ``root``::

    root/<backend.cache_key>-<dtype>/
        index.json                          human/tool listing (written atomically)
        <case_id>__<fingerprint[:16]>.npy   (slices, *backend.embedding_shape) embeddings, one file per case

A case's file name carries the fingerprint of its source, the directory carries the backend's
``cache_key`` (name + encoder weights SHA-256 + preprocessing version) and the storage dtype, so
a changed source file, other weights or other preprocessing simply miss and are recomputed. The
name alone decides a hit (the index is advisory and rebuilt from the files).

Concurrency. Several processes (folds, ``scribmed pseudolabel --shard I/N`` jobs, see
:mod:`scribmed.sam.embedding_shards`) may fill one cache at the same time:

* Entries are written atomically: under a temporary name (``.<entry>.<random>.tmp.npy``) renamed
  onto the final name only when complete, so a reader never sees a half-written entry under the
  final name, and a killed writer leaves only its temporary file, which readers ignore. An entry
  is also checked (``.npy`` header: 4-d, the backend's embedding shape, the storage dtype, file
  long enough) before use, so even a damaged file at the final name reads as a miss.
* A hit needs no lock. A miss takes the entry's lock (``<entry>.lock``, ``fcntl.flock``), looks
  again (another process may have finished the entry meanwhile: then it is a hit and nothing is
  encoded), else encodes and renames. Two processes meeting the same case therefore encode it
  once: the second waits for the first and then reads its file.
* Holding the entry lock, a writer removes the temporary files that dead writers of that entry
  left (any that exist were created before it took the lock, by a process that no longer holds
  it), so ``kill -9`` leftovers do not accumulate. Entry lock files are removed on release (with
  the usual re-check of the file's identity after locking, so waiters never lock a removed file);
  a killed holder may leave one behind, which is harmless: the kernel released its lock.
* ``index.json`` is read-modified-written under ``index.lock`` (and still written atomically), so
  concurrent writers never lose each other's entries. Older entries of the same case (other
  fingerprints) are removed as before; only final ``<case>__<fingerprint16>.npy`` names count,
  never another process's temporary or lock file.

``flock`` locks are released by the kernel when their process dies, so there are no stale locks.
Where they are unavailable (no ``fcntl``, i.e. Windows, or a file system refusing ``flock``) the
cache works without locks (with a warning for the latter): the atomic rename still guarantees
that nothing half-written is read, but two processes meeting the same case may both encode it.
Both then write identical embeddings (same weights, same input) and the last rename wins.

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

import contextlib
import hashlib
import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np
import torch

from scribmed.runtime.files import atomic_output, atomic_write_text
from scribmed.runtime.progress import progress_bar

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks, see the module docstring
    fcntl = None  # type: ignore[assignment]

PathLike = Union[str, Path]
_DTYPES = {"float16": np.float16, "float32": np.float32}
INDEX_NAME = "index.json"
INDEX_LOCK = "index.lock"
LOCK_SUFFIX = ".lock"


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
        progress: show progress bars while computing.

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
        """The case's embeddings ``(slices, *embedding_shape)`` as a read-only memmap (computed if missing).

        Safe to call from several processes at once on one cache: a case is encoded by one of
        them, the others wait for it and read its file (see the module docstring).
        """
        digest, desc = self.fingerprint(case)
        held = self._open.get(case.case_id)
        if held is not None and held[0] == digest:
            self.hits += 1
            return held[1]
        path = self.directory / f"{_safe(case.case_id)}__{digest[:16]}.npy"
        arr = self._open_valid(path)  # a hit needs no lock: final names are only ever complete
        if arr is None:
            with _FileLock(_lock_path(path), remove=True) as lock:
                arr = self._open_valid(path)  # another process may have written it while we waited
                if arr is None:
                    if lock.enforced:
                        _remove_orphans(self.directory, path.name, before=lock.acquired_at)
                    n = self._compute(case, path)
                    self.misses += 1
                    arr = self._open_valid(path)
                    if arr is None:  # pragma: no cover - the file was just written
                        raise RuntimeError(f"{path}: embeddings vanished right after being written")
                    self._remove_stale(case.case_id, keep=path)
                    self._update_index(case.case_id, path, n, desc)
                else:
                    self.hits += 1
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
        for case in progress_bar(cases, desc="SAM embeddings", unit="case", leave=False,
                                 disable=not self.progress or len(cases) <= 1):
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

    def _compute(self, case: Any, path: Path) -> int:
        """Encode the case into ``path`` (atomically); returns its slice count. Call with the entry lock held."""
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
            starts = progress_bar(range(0, n, self.batch_size), desc=f"encoding {case.case_id}", unit="batch",
                                  leave=False, disable=not self.progress or n <= self.batch_size)
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
        return n

    def _remove_stale(self, case_id: str, keep: Path) -> None:
        """Delete older embeddings of the same case (other source fingerprints).

        Only final entry names match (temporary files start with ``.``, lock files end in
        ``.lock``). Temporary files of those other entries are removed too when their entry's
        lock is free (their writer is dead); a live writer's are left alone.
        """
        stem = re.escape(_safe(case_id))
        final = re.compile(rf"^{stem}__[0-9a-f]{{16}}\.npy$")
        temp = re.compile(rf"^\.({stem}__[0-9a-f]{{16}}\.npy)\..+\.tmp\.npy$")
        orphaned: set[str] = set()
        for old in self.directory.iterdir():
            if old == keep:
                continue
            if final.match(old.name):
                old.unlink(missing_ok=True)
            else:
                m = temp.match(old.name)
                if m and m.group(1) != keep.name:
                    orphaned.add(m.group(1))
        for name in sorted(orphaned):
            with _FileLock(_lock_path(self.directory / name), remove=True, blocking=False) as lock:
                if lock.enforced:  # free: whoever wrote those temporary files is gone
                    _remove_orphans(self.directory, name, before=lock.acquired_at)

    def _update_index(self, case_id: str, path: Path, n: int, desc: dict[str, Any]) -> None:
        """Add the case to ``index.json``: read-modify-write under ``index.lock``, written atomically."""
        with _FileLock(self.directory / INDEX_LOCK) as lock:
            if lock.enforced:
                _remove_orphans(self.directory, INDEX_NAME, before=lock.acquired_at)
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


class _FileLock:
    """An exclusive ``fcntl.flock`` on ``path`` (created if needed), as a context manager.

    The kernel releases the lock when the holder's process dies, so a killed job never leaves a
    stale lock. ``remove=True`` deletes the lock file on release (while still holding it); an
    acquirer checks after locking that the file it locked is still the one at ``path`` and retries
    otherwise, so removal never lets two processes hold "the" lock at once.

    ``blocking=False``: don't wait; :attr:`acquired` is then ``False`` when someone else holds it.

    Without ``fcntl`` (Windows), or on a file system that refuses ``flock`` (a warning is issued),
    nothing is locked: :attr:`acquired` is ``True`` but :attr:`enforced` is ``False`` (callers then
    skip anything that relies on exclusion, such as removing other writers' temporary files).

    Attributes:
        acquired: the caller may proceed (a lock is held, or locking is unavailable).
        enforced: a real lock is held.
        acquired_at: ``time.time_ns()`` when it was acquired.
    """

    _warned = False

    def __init__(self, path: PathLike, remove: bool = False, blocking: bool = True) -> None:
        self.path = Path(path)
        self.remove = remove
        self.blocking = blocking
        self.acquired = False
        self.enforced = False
        self.acquired_at = 0
        self._fd: Optional[int] = None

    def acquire(self) -> bool:
        if fcntl is None:  # pragma: no cover - Windows
            self.acquired, self.enforced = True, False
            self.acquired_at = time.time_ns()
            return True
        flags = fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as exc:  # e.g. ENOLCK / EOPNOTSUPP: no flock on this file system
                os.close(fd)
                if not _FileLock._warned:
                    _FileLock._warned = True
                    warnings.warn(f"{self.path}: file locking unavailable ({exc}); the embedding cache runs "
                                  "without locks (entries stay atomic, a case may be encoded twice)",
                                  RuntimeWarning, stacklevel=3)
                self.acquired, self.enforced = True, False
                self.acquired_at = time.time_ns()
                return True
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(fd), current):
                self._fd = fd
                self.acquired = self.enforced = True
                self.acquired_at = time.time_ns()
                return True
            os.close(fd)  # the holder removed (or replaced) the file while we waited: lock the new one

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            if self.remove:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            os.close(fd)  # releases the flock
        self.acquired = self.enforced = False

    def __enter__(self) -> "_FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_path(entry: Path) -> Path:
    """The lock file of an entry: ``<entry name>.lock`` beside it."""
    return entry.with_name(entry.name + LOCK_SUFFIX)


def _temporaries(directory: Path, name: str) -> Iterator[Path]:
    """Temporary files :func:`scribmed.runtime.files.atomic_output` makes for ``directory / name``."""
    suffix = Path(name).suffix
    prefix = f".{name}."
    with contextlib.suppress(OSError):
        for p in directory.iterdir():
            if p.name.startswith(prefix) and p.name.endswith(f".tmp{suffix}"):
                yield p


def _remove_orphans(directory: Path, name: str, before: int) -> None:
    """Remove temporary files of ``name`` older than ``before`` (ns): left by dead writers.

    Only call while holding the lock under which ``name`` is written: any such file created
    before the lock was taken belongs to a writer that no longer holds it, i.e. died mid-write
    (a writer that fails normally removes its own).
    """
    for tmp in list(_temporaries(directory, name)):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime_ns <= before:
                tmp.unlink()


def _safe(text: str) -> str:
    """A file-name-safe version of ``text`` (keeps letters, digits, ``._-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip(".") or "_"


__all__ = ["EmbeddingCache"]
