"""Files the toolkit writes: atomic publication and content hashes (stdlib only, usable by every layer).

Everything scribmed writes — datasets, predictions, pseudo labels, embeddings, reports, split
files, checkpoints — goes through :func:`atomic_output` (or its byte/text shortcuts
:func:`atomic_write_bytes` / :func:`atomic_write_text`), so a crash never leaves a half-written
file under its final name, and every published file gets the usual ``0o666 & ~umask``
permissions. :func:`file_sha256` identifies checkpoints and weight files in run records. The
module imports only the standard library, so the :mod:`scribmed.metrics` leaf may use it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_text", "file_sha256"]


@contextlib.contextmanager
def atomic_output(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The temporary name keeps the file's suffixes (``.nii.gz``, ``.h5``, ``.npz``) so writers
    that pick a format by extension behave the same. A failure removes the temporary file, so
    a crash never leaves a half-written file under the final name. The published file gets the
    usual permissions (``0o666 & ~umask``), not ``mkstemp``'s owner-only ``0o600``: results are
    meant to be shared.

    Args:
        path: the final file name.
        fsync: flush the written file to disk before the rename (small records whose loss
            after a power cut would matter, e.g. reports and indexes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if fsync:
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsynced), with umask permissions; returns ``path``."""
    path = Path(path)
    with atomic_output(path, fsync=True) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
