"""Shared fixtures. Real data lives beside the repository in ``../shared/data`` (never copied in)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SCRIBMED_SHARED_DATA", REPO.parent / "shared" / "data"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set SCRIBMED_SHARED_DATA)")
    return path


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs two workers on the 2-core machine) each worker and the
    processes its tests start use one intra-op thread, so two workers never oversubscribe the cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        import torch

        torch.set_num_threads(1)


#: Test modules in descending order of their run time on the 2-core machine (``--durations``), the
#: rest after them in collection order. ``make test`` hands whole modules to two xdist workers
#: (``--dist loadfile``) in collection order (``--no-loadscope-reorder``: xdist would otherwise
#: reorder modules by their number of tests); longest first keeps both busy to the end instead of
#: leaving one long module running alone.
LONGEST_FIRST = (
    "cluster/test_slurm_cluster.py",
    "integration/test_docs_cluster.py",
    "integration/recipes/test_nnunet_pl_recipe.py",
    "integration/test_executors.py",
    "unit/networks/test_encoder_runtime.py",
    "integration/bundles/test_bundles_instance.py",
    "integration/test_docs_commands.py",
    "integration/test_cross_validation.py",
    "integration/test_cli.py",
    "integration/recipes/test_instance_recipes_realdata.py",
    "integration/test_wheel.py",
    "integration/bundles/test_bundles_samsp.py",
    "integration/bundles/test_bundles_mixsup.py",
    "integration/test_recipe_plugin.py",
    "unit/training/test_trainer.py",
    "integration/bundles/test_bundles.py",
    "integration/recipes/test_mixsup_recipe.py",
    "integration/recipes/test_samsp_recipe.py",
    "integration/recipes/test_instance_recipes.py",
    "integration/test_gpu_check.py",
    "unit/data/test_chaos_t2_reader.py",
    "unit/networks/test_sam_backends.py",
)


def pytest_collection_modifyitems(config, items):
    """Longest modules first (:data:`LONGEST_FIRST`); the order of tests within a module is kept."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    tests_dir = Path(__file__).resolve().parent

    def key(item) -> int:
        try:
            rel = Path(str(item.fspath)).resolve().relative_to(tests_dir).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(rel, len(rank))

    items.sort(key=key)


@pytest.fixture(scope="session")
def acdc_root() -> Path:
    """The WSL4MIS ACDC folder (holds ACDC_training_volumes/)."""
    return _need(SHARED_DATA / "ACDC")


@pytest.fixture(scope="session")
def mscmr_root() -> Path:
    """The CycleMix MSCMR folder (holds train/, val/)."""
    return _need(SHARED_DATA / "MSCMR")


@pytest.fixture(scope="session")
def dsb_root() -> Path:
    """The DSB2018 nuclei folder (holds stage1_test/)."""
    return _need(SHARED_DATA / "DSB2018")


def _run_wide_folder(tmp_path_factory, name: str) -> Path:
    """A folder ``name`` shared by every pytest-xdist worker of this run (their base temporary
    folders share a parent), made if absent."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _made_once(tmp_path_factory, name: str, make) -> Path:
    """The run-wide folder ``name`` (:func:`_run_wide_folder`) after ``make(folder / "made")`` has
    run in it once for the whole run: the first worker to ask makes it, the others wait on a lock
    and reuse it. A ``make`` that fails leaves nothing behind."""
    import fcntl
    import shutil

    folder = _run_wide_folder(tmp_path_factory, name)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".done").exists():
            shutil.rmtree(folder / "made", ignore_errors=True)
            try:
                make(folder / "made")
            except BaseException:
                shutil.rmtree(folder / "made", ignore_errors=True)
                raise
            (folder / ".done").touch()
    return folder / "made"


@pytest.fixture(scope="session")
def jobs_phantom(tmp_path_factory) -> Path:
    """The 5-patient cardiac phantom (``acdc-h5``) the executor and Slurm tests run fold jobs on
    (tests/job_folds.py), written once per run."""
    from job_folds import PHANTOM

    from scribmed.data.phantoms import write_phantom_dataset

    return _made_once(tmp_path_factory, "jobs_phantom",
                      lambda out: write_phantom_dataset("cardiac", "acdc-h5", out, **PHANTOM))


def _reference_run(jobs_phantom: Path, tmp_path_factory, name: str, budget: dict, folds=None) -> Path:
    """A DMPLS cross-validation of :func:`jobs_phantom` (``auto`` split, ``folds`` or all five) at
    ``budget`` (tests/job_folds.py), trained in one process on one thread and merged, once per run
    into the run-wide folder ``name``. Tests only read it."""
    import torch

    from scribmed.crossval.runner import run_cross_validation
    from scribmed.data.layouts import open_dataset
    from scribmed.recipes import build

    def make(out: Path) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            run_cross_validation(build("dmpls", **budget), open_dataset("acdc-h5", jobs_phantom), "auto", out,
                                 folds=folds, progress=False)
        finally:
            torch.set_num_threads(threads)

    return _made_once(tmp_path_factory, name, make)


@pytest.fixture(scope="session")
def long_reference(jobs_phantom, tmp_path_factory) -> Path:
    """Folds 1 and 2 at the LONG budget without interruption: what a fold job stopped and resumed
    on one thread (local executor, Slurm) must equal."""
    from job_folds import LONG

    return _reference_run(jobs_phantom, tmp_path_factory, "long_reference", LONG, folds=[1, 2])


@pytest.fixture(scope="session")
def tiny_five_folds(jobs_phantom, tmp_path_factory) -> Path:
    """All five folds at the TINY budget: the runner's on-disk contract (test_cross_validation.py)
    and what the five Slurm array tasks must equal (test_slurm_cluster.py)."""
    from job_folds import TINY

    return _reference_run(jobs_phantom, tmp_path_factory, "tiny_five_folds", TINY)


@pytest.fixture(scope="session")
def dsb_tiny(dsb_root, tmp_path_factory) -> dict:
    """Five real DSB2018 images for the real-data instance tests: the smallest, fewest nuclei first
    (cheap on 2 cores), as a one-fold split file (3 train, 1 val, 1 test), and one LiteMedSAM
    embedding cache for every xdist worker of the run (it takes concurrent writers), so the recipe
    and bundle tests encode each image once.

    Keys: ``root``, ``ids``, ``split`` (path), ``sam_cache`` (folder).
    """
    import json

    from PIL import Image

    folder = dsb_root / "stage1_test"

    def cost(i: str) -> tuple[int, int, str]:
        with Image.open(folder / i / "images" / f"{i}.png") as img:
            area = img.size[0] * img.size[1]
        return area, len(list((folder / i / "masks").glob("*.png"))), i

    ids = [c[2] for c in sorted(cost(p.name) for p in folder.iterdir() if (p / "masks").is_dir())[:5]]
    shared = _run_wide_folder(tmp_path_factory, "dsb_sam_cache")
    split = tmp_path_factory.mktemp("dsb_split") / "tiny.json"
    split.write_text(json.dumps({"name": "dsb_tiny", "unit": "patient",
                                 "folds": [{"train": ids[:3], "val": ids[3:4], "test": ids[4:5]}]}))
    return {"root": dsb_root, "ids": ids, "split": split, "sam_cache": shared}


@pytest.fixture(autouse=True)
def default_figure_formats(monkeypatch):
    """Every test starts with the default figure formats (png only) and leaves them so:
    ``set_figure_formats`` (``--figures``) changes a process-wide default and ``$SCRIBMED_FIGURES``."""
    from scribmed.runtime import figures

    monkeypatch.delenv(figures.FIGURES_ENV, raising=False)
    figures.set_figure_formats(None, environ=False)
    yield
    figures.set_figure_formats(None, environ=False)


@contextlib.contextmanager
def torch_flags_kept():
    """Restore torch's deterministic-algorithm and cuDNN-benchmark flags on exit (training
    workflows turn them on); module fixtures use it directly, tests through :func:`restore_torch_flags`."""
    import torch

    det, warn, bench = (torch.are_deterministic_algorithms_enabled(),
                        torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn)
        torch.backends.cudnn.benchmark = bench


@pytest.fixture()
def restore_torch_flags():
    """Training workflows turn on deterministic algorithms; undo it after the test."""
    with torch_flags_kept():
        yield


@pytest.fixture()
def one_thread():
    """Tiny tensors: one intra-op thread is faster on the shared 2-core machine (and deterministic).

    Test modules that want it for every test declare ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def _encoder_cache(tmp_path_factory):
    """Compiled SAM encoders go to a session folder, never the user's ``~/.cache`` (unless SCRIBMED_CACHE is set)."""
    if os.environ.get("SCRIBMED_CACHE"):
        yield
        return
    # an encoder compiled by one worker is loaded by the other instead of compiled twice
    os.environ["SCRIBMED_CACHE"] = str(_run_wide_folder(tmp_path_factory, "scribmed_cache"))
    yield
    os.environ.pop("SCRIBMED_CACHE", None)


class _ThreadContext:
    """``multiprocessing`` as nnU-Net's planning modules use it, with ``get_context(...)`` giving thread pools."""

    def __getattr__(self, name):
        import multiprocessing

        return getattr(multiprocessing, name)

    @staticmethod
    def get_context(method=None):
        import multiprocessing.dummy

        return multiprocessing.dummy


def nnunet_in_process(mp: pytest.MonkeyPatch) -> None:
    """nnU-Net's own code, kept in the test's process and off its polling delays (nothing without
    nnU-Net installed). The recipe's real runs use nnU-Net unchanged.

    * nnU-Net fingerprints and preprocesses through ``multiprocessing.get_context("spawn").Pool``:
      each fold of a test would start two fresh interpreters that import torch and nnU-Net (about
      10 s per fold on the 2-core machine) for a few phantom slices. These pools become threads,
      and the pool of 12 forked processes that lists the raw images' files a thread pool too.
    * Both wait for their workers in loops that sleep 0.1 s; they poll every 5 ms instead.
    * The trainer's progress plot (``progress.png``, about 2 s per epoch on this machine) is not drawn.
    """
    import importlib.util
    import multiprocessing.pool
    import time

    if importlib.util.find_spec("nnunetv2") is None:
        return
    import nnunetv2.utilities.utils as nnunet_utils
    from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor
    from nnunetv2.preprocessing.preprocessors import default_preprocessor
    from nnunetv2.training.logging.nnunet_logger import LocalLogger

    for module in (fingerprint_extractor, default_preprocessor):
        mp.setattr(module, "multiprocessing", _ThreadContext())
        mp.setattr(module, "sleep", lambda seconds: time.sleep(min(seconds, 0.005)))
    mp.setattr(nnunet_utils, "Pool", multiprocessing.pool.ThreadPool)
    mp.setattr(LocalLogger, "plot_progress_png", lambda self, output_folder: None)


@pytest.fixture()
def nnunet_light(monkeypatch):
    """:func:`nnunet_in_process` for one test."""
    nnunet_in_process(monkeypatch)
