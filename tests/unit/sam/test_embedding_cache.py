"""EmbeddingCache: one encoder pass per slice, across instances and processes; invalidation; atomic writes."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from scribmed.data.case import Case, CaseArrays
from scribmed.data.phantoms import generate_cardiac
from scribmed.networks.prompt_coords import pad_points
from scribmed.networks.sam_backends import SamBackend
from scribmed.networks.sam_registry import build_sam_backend
from scribmed.sam import EmbeddingCache

REPO = Path(__file__).resolve().parents[3]


class TinyEncoder(nn.Module):
    """(N, 3, 256, 256) -> (N, 256, 64, 64): 4x average pooling and a 1x1 conv; cheap and deterministic."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 256, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.avg_pool2d(x, 4))


class FailingEncoder(TinyEncoder):
    """Raises on its second call (an interrupted case)."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        FailingEncoder.calls += 1
        if FailingEncoder.calls == 2:
            raise RuntimeError("simulated crash mid-case")
        return super().forward(x)


def fake_backend(seed: int = 0, encoder: nn.Module | None = None) -> SamBackend:
    return SamBackend("fake", encoder or TinyEncoder(seed), nn.Identity(), nn.Identity(), 256, "minmax")


def file_case(tmp_path: Path, case_id: str, n: int = 3, seed: int = 0, shape=(40, 48)) -> Case:
    """A case whose image lives in a .npy file (the source the stat fingerprint watches)."""
    path = tmp_path / "data" / f"{case_id}.npy"
    path.parent.mkdir(exist_ok=True)
    np.save(path, np.random.default_rng(seed).random((n, *shape), dtype=np.float32))
    return Case(case_id, case_id, path, loader=lambda: CaseArrays(np.load(path)))


def leftovers(cache: EmbeddingCache) -> list[str]:
    return sorted(p.name for p in cache.directory.iterdir() if p.name.startswith(".") or "tmp" in p.name)


def test_one_encoder_pass_per_slice_across_gets_and_instances(tmp_path):
    cases = [file_case(tmp_path, "p1_frame01", n=3), file_case(tmp_path, "p1_frame12", n=2, seed=1)]
    backend = fake_backend()
    cache = EmbeddingCache(tmp_path / "cache", backend, batch_size=2, progress=False)
    first = cache.get(cases[0])
    assert first.shape == (3, 256, 64, 64) and first.dtype == np.float16
    assert isinstance(first, np.memmap)
    cache.precompute(cases)
    cache.get(cases[0]), cache.get(cases[1])
    assert backend.encoder_calls == 5 and cache.stats() == {"hits": 3, "misses": 2, "slices_encoded": 5}
    direct = backend.encode(backend.preprocess(cases[0].image))[1].numpy()
    np.testing.assert_allclose(cache.get(cases[0])[1].astype(np.float32), direct, rtol=2e-3, atol=2e-3)
    s = cache.slice(cases[0], 1)
    assert s.shape == (1, 256, 64, 64) and s.dtype == torch.float32
    with pytest.raises(IndexError, match="3 slices"):
        cache.slice(cases[0], 3)
    # a fresh backend object and cache on the same root: read from disk, encoder never called
    backend2 = fake_backend()
    again = EmbeddingCache(tmp_path / "cache", backend2, progress=False)
    assert again.directory == cache.directory
    np.testing.assert_array_equal(again.get(cases[1]), cache.get(cases[1]))
    again.precompute(cases)
    assert backend2.encoder_calls == 0 and again.stats()["misses"] == 0
    index = json.loads((cache.directory / "index.json").read_text())
    assert index["cache_key"] == backend.cache_key and set(index["cases"]) == {"p1_frame01", "p1_frame12"}
    assert index["cases"]["p1_frame01"]["slices"] == 3
    assert leftovers(cache) == []


def test_second_process_reads_the_files(tmp_path):
    case = file_case(tmp_path, "c1", n=2)
    cache = EmbeddingCache(tmp_path / "cache", fake_backend(), progress=False)
    cache.get(case)
    script = f"""
import sys; sys.path.insert(0, {str(REPO / 'tests' / 'unit' / 'sam')!r}); sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from test_embedding_cache import fake_backend
from scribmed.data.case import Case, CaseArrays
from scribmed.sam import EmbeddingCache
import numpy as np
p = Path({str(case.source)!r})
case = Case("c1", "c1", p, loader=lambda: CaseArrays(np.load(p)))
b = fake_backend()
c = EmbeddingCache({str(tmp_path / 'cache')!r}, b, progress=False)
print(c.get(case).shape, b.encoder_calls, c.hits)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2, 256, 64, 64) 0 1"


def test_invalidation_on_changed_source_and_backend(tmp_path):
    case = file_case(tmp_path, "c1", n=2)
    backend = fake_backend()
    cache = EmbeddingCache(tmp_path / "cache", backend, progress=False)
    old_path = cache.path_for(case)
    before = np.array(cache.get(case))
    # the source file changes (new content, new mtime/size): recomputed, the stale file removed
    np.save(case.source, np.random.default_rng(9).random((2, 40, 50), dtype=np.float32))
    case.release()
    after = cache.get(case)
    assert backend.encoder_calls == 4 and cache.misses == 2
    assert not old_path.exists() and cache.path_for(case).exists()
    assert not np.array_equal(before, after)
    # other encoder weights -> other cache_key -> other directory, computed afresh
    other = fake_backend(seed=1)
    assert other.cache_key != backend.cache_key
    cache2 = EmbeddingCache(tmp_path / "cache", other, progress=False)
    cache2.get(case)
    assert other.encoder_calls == 2 and cache2.directory != cache.directory
    # float32 storage is a separate entry too
    cache3 = EmbeddingCache(tmp_path / "cache", backend, dtype="float32", progress=False)
    assert cache3.get(case).dtype == np.float32 and backend.encoder_calls == 6
    assert leftovers(cache) == leftovers(cache2) == []


def test_in_memory_case_uses_content_fingerprint(tmp_path):
    ph = generate_cardiac(1, seed=0, slices=(2, 2), frames=("ED",), size=64)[0]
    case = ph.to_case()  # source "<phantom>" is not a file
    backend = fake_backend()
    cache = EmbeddingCache(tmp_path / "cache", backend, progress=False)
    assert cache.fingerprint(case)[1]["kind"] == "content"
    cache.get(case)
    cache.get(ph.to_case())  # same content, new object: hit
    assert backend.encoder_calls == 2
    ph.image[0, 0, 0] += 1.0  # an in-place edit changes the fingerprint
    cache.get(case)
    assert backend.encoder_calls == 4


def test_interrupted_write_leaves_nothing_that_looks_complete(tmp_path):
    case = file_case(tmp_path, "c1", n=3)
    FailingEncoder.calls = 0
    bad = fake_backend(encoder=FailingEncoder())
    cache = EmbeddingCache(tmp_path / "cache", bad, batch_size=1, progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cache.get(case)
    assert not cache.path_for(case).exists()
    assert list(cache.directory.glob("*.npy")) == [] and leftovers(cache) == []
    assert "c1" not in cache.index().get("cases", {})
    good = fake_backend()  # same weights as FailingEncoder(0): same cache_key
    assert good.cache_key == bad.cache_key
    fresh = EmbeddingCache(tmp_path / "cache", good, batch_size=1, progress=False)
    assert fresh.get(case).shape[0] == 3 and good.encoder_calls == 3


def test_lite_medsam_phantom_case_float16_is_negligible(tmp_path):
    """Real LiteMedSAM on a 2-slice phantom: cached once; float16 storage barely moves the decoder."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        backend = build_sam_backend("lite_medsam")
    ph = generate_cardiac(1, seed=3, slices=(2, 2), frames=("ED",), size=96)[0]
    case = ph.to_case()
    cache = EmbeddingCache(tmp_path / "cache", backend, dtype="float32", progress=False)
    emb32 = cache.get(case)
    assert emb32.shape == (2, 256, 64, 64) and backend.encoder_calls == 2
    assert EmbeddingCache(tmp_path / "cache", backend, dtype="float32", progress=False).get(case) is not None
    assert backend.encoder_calls == 2
    z = int(np.argmax([(np.unique(s) > 0).sum() for s in ph.label]))
    classes = [k for k in (1, 2, 3) if (ph.label[z] == k).any()]
    prompts = []
    for k in classes:
        rows, cols = np.nonzero(ph.label[z] == k)
        pick = np.linspace(0, len(rows) - 1, 10).round().astype(int)
        xy = np.stack([cols[pick], rows[pick]], 1)
        prompts.append((backend.to_input_coords(xy, ph.label.shape[1:]), np.ones(10)))
    coords, labels = pad_points(prompts)
    e32 = torch.from_numpy(np.array(emb32[z]))[None]
    e16 = torch.from_numpy(np.array(emb32[z]).astype(np.float16).astype(np.float32))[None]
    with torch.no_grad():
        l32, _ = backend.decode(e32, coords, labels)
        l16, _ = backend.decode(e16, coords, labels)
    diff = (l32 - l16).abs().max().item()
    agree = ((l32 > 0) == (l16 > 0)).float().mean().item()
    print(f"float16 storage: max |logit diff| {diff:.2e}, mask agreement {agree:.6f}")
    assert diff < 0.05 * max(1.0, l32.abs().max().item()), diff
    assert agree > 0.999, agree
