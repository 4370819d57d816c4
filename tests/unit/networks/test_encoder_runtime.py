"""Compiled SAM image encoders (OpenVINO, ONNX Runtime): agreement with PyTorch, the cache, errors."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from scribmed.networks import encoder_runtime as er
from scribmed.networks.sam_registry import build_sam_backend

RUNTIMES = [r for r in ("openvino", "onnxruntime") if er.runtime_available(r)]


def _slices(n: int = 2, hw: tuple[int, int] = (216, 256)) -> np.ndarray:
    """Smooth, image-like grey slices (seeded)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]] / max(hw)
    out = [np.sin(6 * yy * (k + 1)) + np.cos(4 * xx) + 0.1 * rng.standard_normal(hw) for k in range(n)]
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def lite():
    """LiteMedSAM in PyTorch plus one compiled copy per installed runtime, in the session's encoder cache
    (conftest.py), which the other tests that run LiteMedSAM on the CPU then load instead of compiling."""
    cache = er.encoder_cache_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = build_sam_backend("lite_medsam")
        compiled = {r: build_sam_backend("lite_medsam", encoder_runtime=r, encoder_cache=cache) for r in RUNTIMES}
    return ref, compiled, cache


def test_runtimes_installed():
    """The project installs OpenVINO (default CPU runtime) and, for tests, ONNX Runtime."""
    assert RUNTIMES == ["openvino", "onnxruntime"]
    assert er.resolve_runtime("auto", "cpu") == "openvino"


@pytest.fixture(scope="module")
def two_slices(lite):
    """Two preprocessed slices and their PyTorch embeddings (computed once for both runtimes)."""
    ref = lite[0]
    x = ref.preprocess(_slices(2))
    with torch.no_grad():
        return x, ref.encode(x).numpy()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_compiled_matches_torch_within_1e3(lite, two_slices, runtime):
    _, compiled, _ = lite
    backend = compiled[runtime]
    assert backend.encoder_runtime == runtime
    x, expected = two_slices
    got = backend.encode(x)
    assert got.shape == (2, 256, 64, 64) and got.dtype == torch.float32
    assert er.relative_error(got.numpy(), expected) <= 1e-3
    # slice by slice inside a batch: each slice is its own single-slice result
    one = backend.encode(x[1:2]).numpy()
    np.testing.assert_allclose(one[0], got.numpy()[1], rtol=0, atol=1e-6 * np.abs(one).max())
    assert backend.compiled_encoder.max_rel_error <= 1e-3


@pytest.fixture(scope="module")
def real_slice(lite, acdc_root):
    """The middle slice of ACDC patient001's first frame, preprocessed, and its PyTorch embedding."""
    from scribmed.data.layouts import open_dataset

    case = open_dataset("acdc-h5", acdc_root).cases_of(["patient001"])[0]
    image = np.asarray(case.image)
    x = lite[0].preprocess(image[image.shape[0] // 2][None])
    with torch.no_grad():
        return x, lite[0].encode(x).numpy()


@pytest.mark.realdata
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_compiled_matches_torch_on_real_acdc_slice(lite, real_slice, runtime):
    x, expected = real_slice
    assert er.relative_error(lite[1][runtime].encode(x).numpy(), expected) <= 1e-3


def test_cache_key_names_the_runtime(lite):
    ref, compiled, _ = lite
    assert ref.cache_key.endswith("minmax256v1")
    for runtime, backend in compiled.items():
        assert backend.cache_key == f"{ref.cache_key}-{runtime}"
    switched = build_sam_backend("lite_medsam").use_encoder_runtime("torch")
    assert switched.cache_key == ref.cache_key


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_second_build_loads_the_cached_export(lite, runtime, monkeypatch):
    ref, _, cache = lite
    records = [r for r in sorted(cache.glob(f"*-{runtime}*.json"))
               if json.loads(r.read_text())["weights_id"] == ref.weights_id]
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["weights_id"] == ref.weights_id and record["runtime"] == runtime
    assert record["max_rel_error"] <= record["tolerance"] == 1e-3
    assert all((cache / name).is_file() for name in record["files"])

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(er, "_export", no_export)
    backend = build_sam_backend("lite_medsam", encoder_runtime=runtime, encoder_cache=cache)
    assert backend.encoder_runtime == runtime
    assert not list(cache.glob(f".{records[0].stem}*"))  # no temporary folder left behind


_TINY_VIT = {"embed_dim": 48, "depth": 2, "num_heads": 2, "global_attn_indexes": (1,)}


def _tiny_vit():
    """A seeded random tiny ViT-B-layout backend: the same weights (and weights_id) at every call."""
    torch.manual_seed(0)
    return build_sam_backend("vit_b", random_init=True, encoder_config=_TINY_VIT)


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory):
    """A folder holding the tiny ViT exported once for every installed runtime (the exports are
    the slow part: the tests below load them, or copy them and damage the copy)."""
    folder = tmp_path_factory.mktemp("tiny_vit_exports")
    for runtime in RUNTIMES:
        _tiny_vit().use_encoder_runtime(runtime, folder)
    return folder


def test_damaged_or_half_written_export_is_redone(tmp_path, tiny_exports):
    """An export without its record is never loaded; a damaged one is exported again with a warning."""
    for f in tiny_exports.glob("*onnxruntime*"):
        shutil.copy(f, tmp_path / f.name)
    backend = _tiny_vit()
    record = next(tmp_path.glob("*.json"))
    model = next(tmp_path.glob("*.onnx"))
    model.write_bytes(b"not an onnx file")
    with pytest.warns(UserWarning, match="unreadable"):
        backend.use_encoder_runtime("onnxruntime", tmp_path)
    assert model.stat().st_size > 1000
    record.unlink()  # as if killed after publishing the model, before the record
    model.write_bytes(b"half")
    backend.use_encoder_runtime("onnxruntime", tmp_path)
    assert record.is_file() and model.stat().st_size > 1000


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_vit_backend_compiles_too(tiny_exports, runtime):
    backend = _tiny_vit()
    x = backend.preprocess(_slices(1, (120, 160)))
    with torch.no_grad():
        expected = backend.encode(x).numpy()
    backend.use_encoder_runtime(runtime, tiny_exports)
    assert backend.cache_key.endswith(runtime) and backend.weights_id.startswith("vit_b-random-")
    assert er.relative_error(backend.encode(x).numpy(), expected) <= 1e-3


def test_tolerance_failure_raises_or_falls_back(tmp_path, tiny_exports, monkeypatch):
    backend = _tiny_vit()
    with pytest.raises(RuntimeError, match=r"differs from PyTorch by .* relative \(> 0\); use the torch"):
        backend.use_encoder_runtime("onnxruntime", tmp_path, tolerance=0.0)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.json"))
    # a cached export checked at the default tolerance is refused for a stricter one, from its record
    monkeypatch.setattr(er, "_export", lambda *a, **k: pytest.fail("exported again"))
    for runtime in RUNTIMES:
        with pytest.raises(RuntimeError, match=r"\(> 0, measured when it was exported\); use the torch"):
            backend.use_encoder_runtime(runtime, tiny_exports, tolerance=0.0)
        assert backend.use_encoder_runtime(runtime, tiny_exports, tolerance=1e-3).encoder_runtime == runtime
    with pytest.warns(UserWarning, match="encoding with PyTorch"):
        backend.use_encoder_runtime("auto", tiny_exports, tolerance=0.0)
    assert backend.encoder_runtime == "torch"


def test_resolve_runtime_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown encoder runtime 'tensorrt'"):
        er.resolve_runtime("tensorrt", "cpu")
    with pytest.raises(ValueError, match="runs on the CPU only"):
        er.resolve_runtime("openvino", "cuda")
    assert er.resolve_runtime("auto", "cuda") == "torch"
    assert er.resolve_runtime("torch", "cuda") == "torch"
    monkeypatch.setattr(er, "runtime_available", lambda r: r == "torch")
    with pytest.raises(ValueError, match="pip install onnx onnxruntime"):
        er.resolve_runtime("onnxruntime", "cpu")
    assert er.resolve_runtime("auto", "cpu") == "torch"


def test_encoder_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRIBMED_CACHE", str(tmp_path / "s"))
    assert er.encoder_cache_dir() == tmp_path / "s" / "encoders"
    monkeypatch.delenv("SCRIBMED_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert er.encoder_cache_dir() == tmp_path / "x" / "scribmed" / "encoders"


def test_relative_error():
    assert er.relative_error(np.array([1.0, 2.1]), np.array([1.0, 2.0])) == pytest.approx(0.05)
    assert er.relative_error(np.zeros(3), np.zeros(3)) == 0.0


def test_openvino_batches_run_in_parallel_streams(tiny_exports):
    """A batch goes through the throughput compilation; each slice equals its single-slice result."""
    if "openvino" not in RUNTIMES:
        pytest.skip("OpenVINO is not installed")
    backend = _tiny_vit()
    x = backend.preprocess(_slices(3, (120, 160)))
    compiled = er.compile_encoder(backend.image_encoder, backend.input_size, backend.weights_id, "openvino",
                                  tiny_exports, threads=2)
    runner = compiled._run
    assert runner._queue is None
    batch = compiled(x).numpy()
    assert runner._queue is not None and batch.shape[0] == 3
    for i in range(3):
        one = compiled(x[i : i + 1]).numpy()[0]
        np.testing.assert_allclose(batch[i], one, rtol=0, atol=1e-5 * np.abs(one).max())
