"""SAM image encoders compiled for a CPU runtime (OpenVINO or ONNX Runtime), cached by weight hash.

The frozen image encoder is the slow part of SAM on a CPU (LiteMedSAM's TinyViT: about 1 s per
256² slice on 2 cores in PyTorch). Exported once to an existing inference runtime it runs about
3x faster with OpenVINO and 2-2.5x with ONNX Runtime (``benchmarks/sam_speed.py`` measures both side
by side with PyTorch). Runtimes:

* ``torch``: the PyTorch module itself (any device).
* ``openvino``: ``openvino.convert_model`` of the module, saved as OpenVINO IR
  (``.xml`` + ``.bin``), compiled for the CPU in f32 (never the bf16 a CPU with AMX would pick).
  One slice runs with the latency hint (all threads on it); a batch of slices (the embedding
  cache encodes 4 at a time) runs on a second compilation with the throughput hint, its slices
  in parallel streams of fewer threads each, which uses small cores better (1.1x on 2 cores,
  ``benchmarks/sam_speed.py``).
* ``onnxruntime``: ``torch.onnx.export`` to ``.onnx`` (needs the ``onnx`` package), run by an
  ONNX Runtime CPU session.
* ``auto``: ``openvino`` when the backend is on the CPU and OpenVINO imports, else ``torch``.

The compiled model is stored in :func:`encoder_cache_dir` under a name made of the backend, the
SHA-256 of the encoder weights, the input size and the runtime/exporter versions, so new weights
or a new runtime never reuse a stale file. Files are published atomically and a JSON record is
written last: a half-written export is never loaded. Every export is checked against PyTorch on
a seeded input; the maximum relative error (``max |a - b| / max |b|``) must be <= ``tolerance``
(1e-3), and is kept in the record.

Exported graphs have a fixed batch of one slice (TinyViT's reshapes bake the batch size in), so
:class:`CompiledEncoder` runs a batch slice by slice (OpenVINO: concurrently).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from scribmed.runtime.files import atomic_write_text

PathLike = Union[str, Path]

#: accepted ``runtime`` names
ENCODER_RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
#: largest accepted ``max |compiled - torch| / max |torch|`` of an export
DEFAULT_TOLERANCE = 1e-3
#: bumped when the export procedure changes, so old cached files are not reused
EXPORT_VERSION = 1
_ONNX_OPSET = 17

__all__ = [
    "DEFAULT_TOLERANCE",
    "ENCODER_RUNTIMES",
    "CompiledEncoder",
    "compile_encoder",
    "encoder_cache_dir",
    "relative_error",
    "resolve_runtime",
    "runtime_available",
]


def encoder_cache_dir() -> Path:
    """Where compiled encoders are kept: ``$SCRIBMED_CACHE/encoders``, else ``$XDG_CACHE_HOME/scribmed/encoders``, else ``~/.cache/scribmed/encoders``."""
    root = os.environ.get("SCRIBMED_CACHE")
    if root:
        return Path(root) / "encoders"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "scribmed" / "encoders"


def runtime_available(runtime: str) -> bool:
    """Whether ``runtime``'s Python packages import (``torch`` always does)."""
    if runtime == "torch":
        return True
    modules = {"openvino": ("openvino",), "onnxruntime": ("onnxruntime", "onnx")}.get(runtime)
    if modules is None:
        raise ValueError(f"unknown encoder runtime {runtime!r}; choose one of {', '.join(ENCODER_RUNTIMES)}")
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


def resolve_runtime(runtime: str, device: Union[str, torch.device]) -> str:
    """``auto`` -> ``openvino`` on the CPU when it imports, else ``torch``; others are checked and returned.

    Raises:
        ValueError: unknown name; a compiled runtime for a non-CPU device; a runtime whose
            packages are not installed (with the ``pip install`` line).
    """
    if runtime not in ENCODER_RUNTIMES:
        raise ValueError(f"unknown encoder runtime {runtime!r}; choose one of {', '.join(ENCODER_RUNTIMES)}")
    on_cpu = torch.device(device).type == "cpu"
    if runtime == "auto":
        return "openvino" if on_cpu and runtime_available("openvino") else "torch"
    if runtime == "torch":
        return runtime
    if not on_cpu:
        raise ValueError(f"encoder runtime {runtime!r} runs on the CPU only; the backend is on {device} (use 'torch')")
    if not runtime_available(runtime):
        packages = "openvino" if runtime == "openvino" else "onnx onnxruntime"
        raise ValueError(f"encoder runtime {runtime!r} is not installed: pip install {packages}")
    return runtime


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max |actual - expected| / max |expected|`` (0 when both are all zero)."""
    scale = float(np.abs(expected).max())
    diff = float(np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64)).max())
    return diff / scale if scale > 0 else diff


@dataclass
class CompiledEncoder:
    """A compiled image encoder: ``(N, 3, S, S)`` float32 -> ``(N, 256, 64, 64)`` float32, on the CPU.

    Attributes:
        runtime: ``"openvino"`` or ``"onnxruntime"``.
        path: the cached model file (``.xml`` or ``.onnx``).
        input_size: ``S``.
        max_rel_error: the export check's relative error against PyTorch.
        threads: intra-op threads the runtime uses.
    """

    runtime: str
    path: Path
    input_size: int
    max_rel_error: float
    threads: int
    _run: Callable[[np.ndarray], np.ndarray]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        if x.ndim != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(f"compiled encoder expects (N, 3, {self.input_size}, {self.input_size}), got {x.shape}")
        return torch.from_numpy(np.asarray(self._run(x)).astype(np.float32, copy=False))

    def describe(self) -> dict[str, Any]:
        """What run records keep about it."""
        return {"runtime": self.runtime, "path": str(self.path), "max_rel_error": self.max_rel_error,
                "threads": self.threads}


# ------------------------------------------------------------------------------------------
# runtime specifics
# ------------------------------------------------------------------------------------------


def _runtime_version(runtime: str) -> str:
    if runtime == "openvino":
        import openvino

        return str(openvino.__version__).split("-")[0]
    import onnxruntime

    return str(onnxruntime.__version__)


def _file(stem: Path, ext: str) -> Path:
    """``stem`` + ``ext`` (stems hold dots, e.g. version numbers, so ``with_suffix`` would cut them)."""
    return stem.parent / (stem.name + ext)


def _model_files(stem: Path, runtime: str) -> list[Path]:
    """Files of one exported model, the one loaded first."""
    if runtime == "openvino":
        return [_file(stem, ".xml"), _file(stem, ".bin")]
    return [_file(stem, ".onnx")]


def _export(encoder: nn.Module, example: torch.Tensor, runtime: str, stem: Path) -> None:
    """Export ``encoder`` to the files of :func:`_model_files` (written into ``stem``'s folder)."""
    if runtime == "openvino":
        import openvino as ov

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # traced here without TorchScript's re-run check (convert_model's own trace runs the
            # encoder three more times to check it); the export is checked against PyTorch anyway
            traced = torch.jit.trace(encoder.eval(), example, check_trace=False)
            model = ov.convert_model(traced, example_input=example)
        ov.save_model(model, str(_file(stem, ".xml")), compress_to_fp16=False)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                encoder, (example,), str(_file(stem, ".onnx")), input_names=["images"],
                output_names=["embeddings"], opset_version=_ONNX_OPSET, dynamo=False,
            )


class _OpenVinoRunner:
    """``(N, 3, S, S) -> (N, ...)`` through an OpenVINO model of batch one.

    N = 1: one request of the latency-hinted compilation (all threads on the slice). N > 1: the
    slices in parallel streams of a throughput-hinted compilation (made on first use), each slice
    computed alone: a slice's embedding does not depend on the batch beyond float rounding (the
    two compilations may split reductions over different thread counts).
    """

    def __init__(self, path: Path, threads: int) -> None:
        import openvino as ov

        self._ov = ov
        self._core = ov.Core()
        self._model = self._core.read_model(str(path))  # compiled twice, read once (the file may move)
        self._threads = int(threads)
        self._latency = self._compile("LATENCY")
        self._request = self._latency.create_infer_request()
        self._queue: Any = None

    def _compile(self, hint: str) -> Any:
        return self._core.compile_model(self._model, "CPU", {
            "INFERENCE_NUM_THREADS": self._threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint})

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] == 1 or self._threads == 1:
            return np.concatenate([np.array(self._request.infer([x[i : i + 1]])[0], copy=True)
                                   for i in range(x.shape[0])], axis=0)
        if self._queue is None:
            compiled = self._compile("THROUGHPUT")
            self._queue = self._ov.AsyncInferQueue(compiled, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        out: list[Optional[np.ndarray]] = [None] * x.shape[0]

        def done(request: Any, index: int) -> None:
            out[index] = np.array(request.get_output_tensor(0).data, copy=True)

        self._queue.set_callback(done)
        for i in range(x.shape[0]):
            self._queue.start_async([np.ascontiguousarray(x[i : i + 1])], i)
        self._queue.wait_all()
        return np.concatenate(out, axis=0)  # type: ignore[arg-type]


def _load(runtime: str, stem: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """A function running ``(N, 3, S, S)`` float32 arrays through the exported model."""
    if runtime == "openvino":
        return _OpenVinoRunner(_file(stem, ".xml"), threads)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(_file(stem, ".onnx")), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run_ort(x: np.ndarray) -> np.ndarray:
        return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(x.shape[0])], axis=0)

    return run_ort


# ------------------------------------------------------------------------------------------
# the cache
# ------------------------------------------------------------------------------------------


def _check_input(input_size: int, seed: int = 0) -> torch.Tensor:
    """The seeded ``(1, 3, S, S)`` input every export is checked on (an image-like smooth field plus noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 1, 8, 8), generator=g)
    field = torch.nn.functional.interpolate(coarse, size=(input_size, input_size), mode="bilinear", align_corners=False)
    x = (0.8 * field + 0.2 * torch.rand((1, 1, input_size, input_size), generator=g)).clamp(0, 1)
    return x.expand(-1, 3, -1, -1).contiguous()


def compile_encoder(
    encoder: nn.Module,
    input_size: int,
    weights_id: str,
    runtime: str,
    cache_dir: Optional[PathLike] = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    threads: Optional[int] = None,
) -> CompiledEncoder:
    """Export ``encoder`` for ``runtime`` (or reuse the cached export) and load it.

    Args:
        encoder: the PyTorch image encoder (put in eval mode; weights unchanged).
        input_size: side ``S`` of its square input.
        weights_id: identifies the weights, e.g. ``"lite_medsam-<sha256[:16]>"``; part of the file name.
        runtime: ``"openvino"`` or ``"onnxruntime"``.
        cache_dir: where exports live (default :func:`encoder_cache_dir`).
        tolerance: largest accepted relative error against PyTorch on the check input.
        threads: runtime intra-op threads (default ``torch.get_num_threads()``).

    Raises:
        ValueError: ``runtime`` not a compiled runtime, or not installed.
        RuntimeError: the export's relative error exceeds ``tolerance`` (names the file; use the
            ``torch`` runtime instead), whether measured now or recorded with a cached export
            under a looser tolerance.
    """
    if runtime not in ("openvino", "onnxruntime"):
        raise ValueError(f"compile_encoder needs 'openvino' or 'onnxruntime', got {runtime!r}")
    resolve_runtime(runtime, "cpu")
    threads = int(threads or torch.get_num_threads())
    folder = Path(cache_dir) if cache_dir is not None else encoder_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    version = _runtime_version(runtime)
    torch_version = torch.__version__.split("+")[0]
    stem = folder / f"{weights_id}-s{int(input_size)}-{runtime}{version}-torch{torch_version}-v{EXPORT_VERSION}"
    record_path = _file(stem, ".json")
    encoder.eval()
    record: Optional[dict[str, Any]] = None
    if record_path.is_file() and all(p.is_file() for p in _model_files(stem, runtime)):
        try:
            record = json.loads(record_path.read_text())
            run = _load(runtime, stem, threads)
        except Exception as exc:  # a damaged cache entry: export again
            warnings.warn(f"{stem}: cached {runtime} encoder unreadable ({type(exc).__name__}: {exc}); exporting again",
                          stacklevel=2)
            record = None
    if record is not None and not float(record["max_rel_error"]) <= tolerance:
        raise RuntimeError(  # measured when it was exported: the same weights give the same error again
            f"{stem}: {runtime} export differs from PyTorch by {float(record['max_rel_error']):.2e} relative "
            f"(> {tolerance:g}, measured when it was exported); use the torch encoder runtime"
        )
    if record is None:
        example = _check_input(int(input_size))
        tmp = Path(tempfile.mkdtemp(prefix=f".{stem.name}.", dir=folder))
        try:
            tmp_stem = tmp / stem.name
            with torch.no_grad():
                _export(encoder, example, runtime, tmp_stem)
                expected = encoder(example).numpy()
            run = _load(runtime, tmp_stem, threads)  # held in memory: stays valid after the files move
            actual = run(example.numpy())
            error = relative_error(actual, expected)
            if not error <= tolerance:
                raise RuntimeError(
                    f"{stem}: {runtime} export differs from PyTorch by {error:.2e} relative (> {tolerance:g}); "
                    "use the torch encoder runtime"
                )
            for src, dst in zip(_model_files(tmp_stem, runtime)[::-1], _model_files(stem, runtime)[::-1]):
                os.replace(src, dst)  # the file loaded first is published last
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        record = {
            "weights_id": weights_id, "input_size": int(input_size), "runtime": runtime, "runtime_version": version,
            "torch": torch_version, "export_version": EXPORT_VERSION, "max_rel_error": error,
            "tolerance": float(tolerance), "files": [p.name for p in _model_files(stem, runtime)],
        }
        atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return CompiledEncoder(runtime, _model_files(stem, runtime)[0], int(input_size),
                           float(record["max_rel_error"]), threads, run)
