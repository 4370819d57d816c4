"""EmbeddingCache under concurrency: two processes on one cache, a writer killed mid-write; shards.

Child processes run this module's :func:`_child` (``python -c``), so the fake backend here is
importable from them. It is slow on purpose (``delay`` seconds per encoder call), deterministic
(the embedding is a function of the image) and appends every encoder call to a log file, so the
tests count encodes across processes instead of trusting timings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
import torch

from scribmed.data.case import Case, CaseArrays
from scribmed.sam import embedding_shards
from scribmed.sam.embedding_cache import (
    INDEX_LOCK,
    EmbeddingCache,
    _FileLock,
    _lock_path,
)
from scribmed.sam.embedding_shards import encode_shard, parse_shard, shard_items

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SIZE = 16


class SlowBackend:
    """A cheap deterministic stand-in for a SAM backend (what EmbeddingCache uses of one).

    Images ``(slices, 16, 16)`` carry their case number at pixel ``(0, 0)`` and slice index at
    ``(0, 1)``, so the log names what was encoded: ``start|end <pid> <case>:<slice>`` per slice.
    """

    cache_key = "slow-fake-v1"
    embedding_shape = (4, 8, 8)
    device = None

    def __init__(self, log: Optional[str] = None, delay: float = 0.0) -> None:
        self.log = log
        self.delay = float(delay)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(images, dtype=np.float32))

    def _record(self, event: str, x: torch.Tensor) -> None:
        if self.log is not None:
            names = " ".join(f"{round(float(s[0, 0]))}:{round(float(s[0, 1]))}" for s in x)
            with open(self.log, "a") as fh:  # O_APPEND: one short line per write, safe across processes
                fh.write(f"{event} {os.getpid()} {names}\n")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._record("start", x)
        if self.delay:
            time.sleep(self.delay)  # a slow encoder, so processes really overlap
        pooled = torch.nn.functional.avg_pool2d(x[:, None], 2)[:, 0]  # (B, 8, 8)
        out = torch.stack([pooled * (c + 1) + 0.25 * c for c in range(4)], 1)
        self._record("end", x)
        return out


def make_case(k: int, slices: int = 2) -> Case:
    """In-memory case ``case_<k>`` (content fingerprint), the same in every process."""
    image = np.random.default_rng(k).random((slices, SIZE, SIZE), dtype=np.float32)
    image[:, 0, 0] = k
    image[:, 0, 1] = np.arange(slices)
    return Case(f"case_{k}", f"case_{k}", Path("<memory>"), loader=lambda: CaseArrays(image))


def _fill(spec: dict[str, Any]) -> dict[str, int]:
    """Wait for the go file (when ``spec["ready"]``), then ``get`` every case; returns the cache stats."""
    backend = SlowBackend(spec["log"], spec["delay"])
    cache = EmbeddingCache(spec["root"], backend, batch_size=1, progress=False)
    cases = [make_case(k) for k in spec["cases"]]
    if spec.get("ready"):
        Path(spec["ready"]).touch()
        deadline = time.monotonic() + 120
        while not Path(spec["go"]).exists():  # a barrier, so both processes really start together
            if time.monotonic() > deadline:
                raise SystemExit("no go signal")
            time.sleep(0.01)
    for case in cases:
        cache.get(case)
    return cache.stats()


def _child(spec_json: str) -> None:
    """Child process: :func:`_fill`, printing the stats."""
    print(json.dumps(_fill(json.loads(spec_json))))


def spawn(**spec: Any) -> subprocess.Popen:
    script = (f"import sys; sys.path[:0] = [{str(HERE)!r}, {str(REPO)!r}]\n"
              "from test_embedding_cache_concurrency import _child\n"
              f"_child({json.dumps(spec)!r})\n")
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def encodes(log: Path) -> dict[str, int]:
    """How many times each ``case:slice`` was started, from the log."""
    counts: dict[str, int] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        event, _pid, *names = line.split()
        if event == "start":
            for name in names:
                counts[name] = counts.get(name, 0) + 1
    return counts


def reference(tmp_path: Path, ks) -> dict[int, np.ndarray]:
    cache = EmbeddingCache(tmp_path / "reference", SlowBackend(), batch_size=1, progress=False)
    return {k: np.array(cache.get(make_case(k))) for k in ks}


def leftovers(directory: Path) -> list[str]:
    """Temporary and lock files (``index.lock`` is permanent)."""
    return sorted(p.name for p in directory.iterdir()
                  if p.name.startswith(".") or (p.name.endswith(".lock") and p.name != INDEX_LOCK))


def get_with_timeout(cache: EmbeddingCache, case: Case, timeout: float = 20.0) -> np.ndarray:
    """``cache.get(case)`` in a thread: a lock left held fails the test instead of hanging it."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["arr"] = cache.get(case)
        except Exception as exc:  # pragma: no cover - reported below
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"get({case.case_id}) still blocked after {timeout} s: a lock was left held"
    if "error" in result:
        raise result["error"]
    return result["arr"]


# ---------------------------------------------------------------------- processes


def test_two_processes_fill_one_cache_encoding_each_case_once(tmp_path):
    root, log = tmp_path / "cache", tmp_path / "encodes.log"
    # same order, so they meet on the shared cases (one may win every race for them); one own case each
    first, second = [0, 1, 2, 3, 4, 6], [0, 1, 2, 3, 4, 5]
    # this process is the second writer (already warm: one interpreter start instead of two)
    child = spawn(root=str(root), log=str(log), delay=0.15, cases=first, ready=str(tmp_path / "ready"),
                  go=str(tmp_path / "go"))
    try:
        wait_for(lambda: (tmp_path / "ready").exists() or child.poll() is not None, "the child to start")
        (tmp_path / "go").touch()
        mine = _fill({"root": str(root), "log": str(log), "delay": 0.15, "cases": second})
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    stats = [json.loads(out.strip().splitlines()[-1]), mine]
    pids = {line.split()[1] for line in log.read_text().splitlines()}
    assert pids == {str(child.pid), str(os.getpid())}  # both processes encoded (at least their own case)
    ks = sorted(set(first) | set(second))
    # every slice went through the encoder exactly once, summed over both processes
    assert encodes(log) == {f"{k}:{z}": 1 for k in ks for z in range(2)}
    assert sum(s["misses"] for s in stats) == len(ks)
    assert sum(s["hits"] for s in stats) == len(first) + len(second) - len(ks)
    assert sum(s["slices_encoded"] for s in stats) == 2 * len(ks)
    # a later process finds every entry complete, equal to a single-process computation
    backend = SlowBackend(log=str(tmp_path / "after.log"))
    cache = EmbeddingCache(root, backend, batch_size=1, progress=False)
    expected = reference(tmp_path, ks)
    for k in ks:
        np.testing.assert_array_equal(cache.get(make_case(k)), expected[k])
    assert cache.stats()["misses"] == 0 and not (tmp_path / "after.log").exists()
    assert sorted(cache.index()["cases"]) == [f"case_{k}" for k in ks]
    assert leftovers(cache.directory) == []


def test_writer_killed_mid_write_leaves_no_entry_and_no_held_lock(tmp_path):
    root, log = tmp_path / "cache", tmp_path / "encodes.log"
    proc = spawn(root=str(root), log=str(log), delay=120, cases=[7])  # sleeps inside encode
    try:
        wait_for(lambda: encodes(log) or proc.poll() is not None, "the child to start encoding")
        assert proc.poll() is None, proc.communicate()[1]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    backend = SlowBackend(log=str(tmp_path / "parent.log"))
    cache = EmbeddingCache(root, backend, batch_size=1, progress=False)
    case = make_case(7)
    entry = cache.path_for(case)
    # nothing at the final name; the dead writer's temporary file and lock file are there
    assert not entry.exists() and "case_7" not in cache.index().get("cases", {})
    temps = [p.name for p in cache.directory.iterdir() if p.name.startswith(f".{entry.name}.")]
    assert len(temps) == 1 and temps[0].endswith(".tmp.npy")
    assert _lock_path(entry).exists()
    with _FileLock(_lock_path(entry), blocking=False) as lock:  # the kernel released the dead holder's lock
        assert lock.acquired and lock.enforced
    # a new cache computes it (without blocking), complete and correct; the leftovers are gone
    arr = get_with_timeout(cache, case)
    np.testing.assert_array_equal(arr, reference(tmp_path, [7])[7])
    assert cache.stats() == {"hits": 0, "misses": 1, "slices_encoded": 2}
    assert encodes(tmp_path / "parent.log") == {"7:0": 1, "7:1": 1}
    assert leftovers(cache.directory) == [] and "case_7" in cache.index()["cases"]


# ---------------------------------------------------------------------- one process


def test_waiter_reads_the_entry_another_holder_finished(tmp_path):
    """The re-check under the lock: a writer that was waiting finds the entry done and encodes nothing."""
    backend = SlowBackend(log=str(tmp_path / "log"))
    cache = EmbeddingCache(tmp_path / "cache", backend, batch_size=1, progress=False)
    case = make_case(3)
    entry = cache.path_for(case)
    other = EmbeddingCache(tmp_path / "cache", SlowBackend(), batch_size=1, progress=False)
    looked: list[Path] = []
    check = cache._open_valid
    cache._open_valid = lambda path: (looked.append(path), check(path))[1]  # type: ignore[method-assign]
    result: dict[str, np.ndarray] = {}
    with _FileLock(_lock_path(entry)) as held:  # "another process" holds the entry lock ...
        assert held.enforced
        t = threading.Thread(target=lambda: result.setdefault("arr", cache.get(case)), daemon=True)
        t.start()
        wait_for(lambda: looked or not t.is_alive(), "the first look (a miss)")
        other._compute(case, entry)  # ... and writes the entry while the first one goes for the lock
        assert "arr" not in result  # still waiting for the lock
    t.join(20)
    assert not t.is_alive()
    np.testing.assert_array_equal(result["arr"], reference(tmp_path, [3])[3])
    assert cache.stats() == {"hits": 1, "misses": 0, "slices_encoded": 0}
    assert not (tmp_path / "log").exists()


def test_damaged_file_at_the_final_name_reads_as_a_miss(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache", SlowBackend(), batch_size=1, progress=False)
    case = make_case(1)
    good = np.array(cache.get(case))
    entry = cache.path_for(case)
    size = entry.stat().st_size
    with entry.open("r+b") as fh:
        fh.truncate(size - 64)
    fresh = EmbeddingCache(tmp_path / "cache", SlowBackend(), batch_size=1, progress=False)
    np.testing.assert_array_equal(fresh.get(case), good)
    assert fresh.stats()["misses"] == 1 and entry.stat().st_size == size


def test_stale_cleanup_spares_live_writers_files(tmp_path):
    """Stale final entries go, a dead writer's temporary goes, a live writer's temporary and lock stay."""
    cache = EmbeddingCache(tmp_path / "cache", SlowBackend(), batch_size=1, progress=False)
    d = cache.directory
    stale = d / "case_1__0123456789abcdef.npy"
    np.save(stale, np.zeros((2, 4, 8, 8), np.float16))
    live = d / "case_1__1111111111111111.npy"
    live_tmp = d / f".{live.name}.abc123.tmp.npy"
    dead_tmp = d / ".case_1__2222222222222222.npy.def456.tmp.npy"
    index_tmp = d / ".index.json.ghi789.tmp.json"  # a writer killed while rewriting the index
    other_case = d / "case_10__0123456789abcdef.npy"  # another case whose id starts alike
    for p in (live_tmp, dead_tmp, index_tmp):
        p.write_bytes(b"partial")
    np.save(other_case, np.zeros((2, 4, 8, 8), np.float16))
    with _FileLock(_lock_path(live)) as lock:  # a live writer of another fingerprint
        assert lock.enforced
        cache.get(make_case(1))
        assert live_tmp.exists() and _lock_path(live).exists()
    assert not stale.exists() and not dead_tmp.exists() and not index_tmp.exists()
    assert other_case.exists() and cache.path_for(make_case(1)).exists()
    assert not _lock_path(d / "case_1__2222222222222222.npy").exists()


def test_file_lock_excludes_other_descriptors_and_survives_removal(tmp_path):
    path = tmp_path / "x.lock"
    with _FileLock(path, remove=True) as a:
        assert a.acquired and a.enforced and path.exists()
        with _FileLock(path, blocking=False) as b:
            assert not b.acquired and not b.enforced
    assert not path.exists()  # removed on release
    with _FileLock(path, blocking=False) as c:
        assert c.acquired and c.enforced


# ---------------------------------------------------------------------- shards


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard(" 1 / 1 ") == (1, 1)
    assert parse_shard("4/4") == (4, 4)
    for bad in ("5/4", "0/3", "1/0", "-1/3", "a/b", "2", "", "1/2/3", "1.5/3"):
        with pytest.raises(ValueError, match=r"--shard must be I/N with 1 <= I <= N, like 2/4, got"):
            parse_shard(bad)
    with pytest.raises(ValueError, match=r"got '5/4'"):
        parse_shard("5/4")


def test_shard_items_disjoint_balanced_complete_and_order_independent():
    cases = [make_case(k) for k in range(11)]
    shuffled = [cases[i] for i in np.random.default_rng(0).permutation(len(cases))]
    for n in range(1, 6):
        shares = [shard_items(shuffled, (i, n)) for i in range(1, n + 1)]
        ids = [[c.case_id for c in s] for s in shares]
        flat = [x for s in ids for x in s]
        assert sorted(flat) == sorted(c.case_id for c in cases) and len(flat) == len(set(flat))
        assert max(map(len, ids)) - min(map(len, ids)) <= 1
        assert ids == [[c.case_id for c in shard_items(cases, f"{i}/{n}")] for i in range(1, n + 1)]
    assert shard_items(["b", "c", "a"], (1, 2)) == ["a", "c"]
    assert shard_items([], (2, 3)) == []
    for bad in ((0, 2), (3, 2), "3/2"):
        with pytest.raises(ValueError, match="1 <= I <= N"):
            shard_items(cases, bad)


def test_encode_shard_fills_the_cache_then_all_hits(tmp_path, monkeypatch):
    cases = [make_case(k) for k in range(5)]
    backend = SlowBackend(log=str(tmp_path / "log"))
    s1 = encode_shard(backend, cases, tmp_path / "cache", "1/2", progress=False)
    s2 = encode_shard(backend, list(reversed(cases)), tmp_path / "cache", (2, 2), progress=False)
    assert {k: s1[k] for k in ("shard", "cases", "hits", "misses", "slices_encoded")} == {
        "shard": "1/2", "cases": 3, "hits": 0, "misses": 3, "slices_encoded": 6}
    assert (s2["shard"], s2["cases"], s2["misses"], s2["hits"]) == ("2/2", 2, 2, 0)
    assert encodes(tmp_path / "log") == {f"{k}:{z}": 1 for k in range(5) for z in range(2)}
    assert all(c._cache is None for c in cases)  # loaded for encoding only, released again
    # every case is now on disk: the whole set is all hits, built from a backend name too
    seen: dict[str, Any] = {}

    def fake_build(name, **kwargs):
        seen.update(name=name, **kwargs)
        return SlowBackend(log=str(tmp_path / "log"))

    monkeypatch.setattr("scribmed.networks.sam_registry.build_sam_backend", fake_build)
    s3 = embedding_shards.encode_shard("lite_medsam", cases, tmp_path / "cache", progress=False, device="cpu",
                                       encoder_runtime="torch", backend_options={"random_init": False})
    assert (s3["shard"], s3["cases"], s3["hits"], s3["misses"], s3["slices_encoded"]) == ("1/1", 5, 5, 0, 0)
    assert seen == {"name": "lite_medsam", "checkpoint": None, "device": "cpu", "encoder_runtime": "torch",
                    "encoder_cache": None, "random_init": False}
    assert s3["directory"] == s1["directory"] and sorted(json.loads(
        (Path(s1["directory"]) / "index.json").read_text())["cases"]) == [f"case_{k}" for k in range(5)]
