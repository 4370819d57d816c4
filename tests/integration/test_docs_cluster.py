"""Every command of docs/cluster.md runs; the Slurm commands on a real one-node cluster.

The blocks run in page order within four independent tests: the GPU check, the Slurm sequence
(the embedding-cache shards, the SAM-SP submission, status, merge, the rerun, the DDP job), the
local executor and torchrun. A ``scribmed`` command is expanded by bash and run through the
CLI's entry point in the test's process; so is the ``torchrun ... -m scribmed`` command
(torchrun's own options parsed by torchrun's parser), as the one process of a torchrun group of
one (a fold trained by two real ranks, rank 0 alone writing it, is the DDP job below). The GPU
check's ``python benchmarks/gpu_check.py`` runs the script's ``main`` in the test's process too.
The other commands (``sbatch``) run in bash.

The Slurm sequence runs against the real cluster of tests/cluster/slurm.sh (started for this
module, skipped with the script's reason where it cannot start), and its jobs really run. What
stands in for the GPU cluster and the data (the page says so too):

* ``$ACDC`` is an ACDC-layout phantom of 17 patients, two test and two validation patients of every
  fold of ``acdc_5fold`` (tests/acdc_split_phantom.py; the page passes ``--allow-missing``), and
  SAM in the jobs is the suite's stand-in (``tests/cluster/fake_sam`` on ``PYTHONPATH``);
* the jobs ask for no GPU and one CPU (no ``--gpus-per-node``, ``--slurm-gpus-per-node`` 0,
  ``--cpus-per-task``, ``--slurm-cpus-per-task`` 1, ``--slurm-mem 3G``, ``--sam-device cpu``), on
  the test cluster's partition ``main`` instead of ``gpu``; ``module load cuda/12.4`` is left out
  (no environment modules here) and the ``source .../activate`` line activates this suite's venv;
* the cache is filled by 2 shard jobs instead of 4 (``--array=1-2``, ``--shard .../2``);
* SAM-SP runs folds 1 and 2 (``--folds 1,2``) of 2 iterations of batch 2 at 32x32 with one
  decoder fine-tuning round of one epoch; the merge runs once they have finished;
* the DDP job trains fold 1 with 2 tasks instead of 4, 2 iterations of batch 2 per task at 32x32
  (how its result compares with one process of the same global batch:
  tests/cluster/test_slurm_cluster.py);
* elsewhere ``--iterations 60000`` becomes 2 iterations of batch 2 at 32x32, ``--nproc_per_node 4``
  becomes 2, the GPU check runs with ``--quick``, and the local executor (section 5) runs fold 1
  only with 2 workers.

What only a GPU cluster has (the job scripts' GPU, partition and memory lines, ``module load``)
is checked on the job scripts with a stand-in ``sbatch`` in tests/integration/test_executors.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from acdc_split_phantom import write_acdc_5fold_phantom
from doc_blocks import bash_blocks, recorded_calls
from slurm_cluster import FAKE_SAM, job_state, running_cluster, wait_for_jobs, wait_until_idle
from torchrun_env import group_of_one

from scribmed.cli import main
from scribmed.crossval.fold_jobs import read_job_record, read_submission

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "cluster.md"

#: The Slurm blocks' substitutions for the one-node CPU cluster (module docstring), in order.
ON_THE_TEST_CLUSTER = (
    ("--gpus-per-node=1 --cpus-per-task=8", "--cpus-per-task=1"),
    ("--array=1-4", "--array=1-2"),
    ("--shard \\${SLURM_ARRAY_TASK_ID}/4", "--shard \\${SLURM_ARRAY_TASK_ID}/2"),
    ("--sam-device cuda", "--sam-device cpu"),
    ("--slurm-partition gpu", "--slurm-partition main"),
    ("--slurm-gpus-per-node 1 --slurm-cpus-per-task 8", "--slurm-gpus-per-node 0 --slurm-cpus-per-task 1"),
    ("--slurm-mem 64G", "--slurm-mem 3G"),
    ('--slurm-setup "module load cuda/12.4" ', ""),
    ("source ~/venvs/scribmed/bin/activate", f"source {Path(sys.prefix) / 'bin' / 'activate'}"),
    ("--iterations 60000 --sam-device", "--iterations 2 --size 32 --batch-size 2 --rounds 1 --sam-epochs 1 "
                                        "--folds 1,2 --sam-device"),
    ("--batch-size 3 --iterations 60000 \\\n    --executor slurm",
     "--batch-size 2 --iterations 2 --size 32 --fold 1 \\\n    --executor slurm"),
    ("--slurm-gpus-per-node 4 --slurm-tasks-per-node 4 --slurm-cpus-per-task 4",
     "--slurm-gpus-per-node 0 --slurm-tasks-per-node 2 --slurm-cpus-per-task 1 --slurm-mem 3G"),
)


def adapt(block: str, acdc: Path, tmp: Path) -> str:
    """The test's substitutions (module docstring)."""
    if _kind(block) == "slurm":
        for old, new in ON_THE_TEST_CLUSTER:
            block = block.replace(old, new)
    block = block.replace("--iterations 60000", "--iterations 2 --size 32 --batch-size 2")
    block = block.replace("--nproc_per_node 4", "--nproc_per_node 2")
    block = block.replace("python benchmarks/gpu_check.py", "python benchmarks/gpu_check.py --quick")
    block = block.replace("--executor local --workers 4", "--executor local --workers 2 --fold 1")
    block = block.replace("ACDC=/data/ACDC", f"ACDC={shlex.quote(str(acdc))}")
    return block.replace("runs/", f"{tmp}/runs/")


@pytest.fixture(scope="module")
def acdc(tmp_path_factory) -> Path:
    return write_acdc_5fold_phantom(tmp_path_factory.mktemp("docs_cluster"), size=(48, 48))


def _kind(block: str) -> str:
    """Which test runs a block: the GPU check, the local executor, torchrun, or the Slurm sequence."""
    if "gpu_check.py" in block:
        return "gpu_check"
    if "--executor local" in block:
        return "local"
    if block.strip().startswith("torchrun"):
        return "torchrun"
    return "slurm"


@pytest.fixture(scope="module")
def page(acdc, tmp_path_factory):
    """The page's blocks and the environment every block runs in."""
    text = DOC.read_text()
    blocks = bash_blocks(text)
    assert len(blocks) >= 9, "docs/cluster.md lost commands"
    tmp = tmp_path_factory.mktemp("cluster_page")
    env = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]), "OMP_NUM_THREADS": "1"}
    return {"text": text, "blocks": blocks, "variables": adapt(blocks[0], acdc, tmp), "tmp": tmp, "env": env,
            "acdc": acdc}


@pytest.fixture(scope="module")
def cluster(page, tmp_path_factory):
    """The page's environment on the running one-node cluster, with the SAM stand-in for its jobs."""
    with running_cluster(tmp_path_factory.mktemp("slurm")) as conf:
        pythonpath = os.pathsep.join(filter(None, [str(FAKE_SAM), os.environ.get("PYTHONPATH")]))
        page["env"] = {**page["env"], "SLURM_CONF": conf, "PYTHONPATH": pythonpath}
        yield conf


def scribmed_calls(script: str, env: dict) -> list[list[str]]:
    """The argument lists of the ``scribmed`` commands ``script`` runs, as bash expands them."""
    return [call[1:] for call in recorded_calls(script, ("scribmed",), env, REPO)]


def run_in_process(argv: list[str], page, monkeypatch, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """``scribmed ARGV`` through the console script's entry point in this process, in the page's
    environment plus ``extra_env``; a new Python would spend most of the test importing torch and
    MONAI."""
    for var in ("PATH", "OMP_NUM_THREADS", "SLURM_CONF", "PYTHONPATH"):
        if var in page["env"]:
            monkeypatch.setenv(var, page["env"][var])
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    for var, value in (extra_env or {}).items():
        monkeypatch.setenv(var, value)
    monkeypatch.chdir(REPO)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["scribmed", *argv], code, out.getvalue(), err.getvalue())


def run_under_torchrun(script: str, page, monkeypatch) -> subprocess.CompletedProcess:
    """The block's ``torchrun OPTIONS -m scribmed ARGS``: OPTIONS must parse with torchrun's own
    parser, and ``scribmed ARGS`` runs in this process with torchrun's environment for one process
    (a fold of two real ranks: tests/cluster/test_slurm_cluster.py)."""
    from torch.distributed.run import get_args_parser

    (call,) = recorded_calls(script, ("torchrun",), page["env"], REPO)
    launch = get_args_parser().parse_args(call[1:])
    assert launch.module and launch.training_script == "scribmed", call
    assert launch.standalone and launch.nproc_per_node == "2", call  # the adapted --nproc_per_node 4
    torchrun_env = group_of_one()
    with monkeypatch.context() as m:
        return run_in_process(launch.training_script_args, page, m, torchrun_env)


def run_gpu_check(script: str, page, monkeypatch) -> subprocess.CompletedProcess:
    """The block's ``python benchmarks/gpu_check.py ARGS``: the script's ``main(ARGS)`` in this
    process (what ``if __name__ == "__main__"`` calls), its intra-op threads, torch flags and
    ``sys.path`` restored afterwards."""
    import runpy

    import torch
    from conftest import torch_flags_kept

    (call,) = recorded_calls(script, ("python",), page["env"], REPO)
    assert call[1] == "benchmarks/gpu_check.py", call
    threads = torch.get_num_threads()
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts the repository first
    monkeypatch.chdir(REPO)
    out, err = io.StringIO(), io.StringIO()
    try:
        with torch_flags_kept(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(REPO / call[1]), run_name="gpu_check")["main"](call[2:])
    finally:
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(call, 0, out.getvalue(), err.getvalue())


def run_blocks(page, kind: str, monkeypatch, before=None) -> list[tuple[str, subprocess.CompletedProcess]]:
    """Run the page's blocks of ``kind`` in page order (each after the variables block); every
    command must succeed.

    A block that is a ``scribmed`` command runs in this process (:func:`run_in_process`) with the
    arguments bash expands it to, a ``torchrun -m scribmed`` block too (:func:`run_under_torchrun`),
    and the GPU check (:func:`run_gpu_check`); the others (``sbatch``) run in bash, in the page's
    scratch folder (where Slurm writes a ``--wrap`` job's log). ``before(block)`` is called first
    for each block (to wait for jobs, as a user would).
    """
    results = []
    for block in page["blocks"][1:]:
        if _kind(block) != kind:
            continue
        if before is not None:
            before(block)
        script = page["variables"] + "\n" + adapt(block, page["acdc"], page["tmp"])
        if block.lstrip().startswith("scribmed "):
            calls = scribmed_calls(script, page["env"])
            assert len(calls) == 1, f"one scribmed command per block:\n{block}"
            done = run_in_process(calls[0], page, monkeypatch)
        elif kind == "torchrun":
            done = run_under_torchrun(script, page, monkeypatch)
        elif kind == "gpu_check":
            done = run_gpu_check(script, page, monkeypatch)
        else:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=page["tmp"], env=page["env"],
                                  capture_output=True, text=True, timeout=900)
        results.append((block, done))
        assert done.returncode == 0, f"{block}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert results, f"docs/cluster.md has no {kind} block"
    return results


def test_install_line_and_extra(page):
    assert "pip install 'scribmed[cluster]'" in page["text"]
    assert '"submitit>=1.5"' in (REPO / "pyproject.toml").read_text().split("cluster = [", 1)[1].split("]")[0]


def test_gpu_check_block(page, monkeypatch):
    """The page's GPU check; without a GPU it is the suite's CPU run of benchmarks/gpu_check.py."""
    import torch
    from test_gpu_check import check_cpu_quick_run

    (_, done), = run_blocks(page, "gpu_check", monkeypatch)
    gpu = json.loads((page["tmp"] / "runs" / "samsp_acdc_5fold" / "gpu_check.json").read_text())
    if torch.cuda.is_available():  # test_gpu_check.py checks the CUDA run itself
        assert gpu["quick"] and "dmpls_hours" in gpu["fold_estimate"]
    else:
        check_cpu_quick_run(gpu, done.stdout)


def test_every_substitution_for_the_test_cluster_applies(page):
    """A changed Slurm command of the page would otherwise silently run unadapted."""
    slurm = "\n".join(b for b in page["blocks"][1:] if _kind(b) == "slurm")
    assert [old for old, _ in ON_THE_TEST_CLUSTER if old not in slurm] == []


def _cached(run: Path) -> list[str]:
    """The embedding cache's entries (final names only)."""
    return sorted(p.name for p in (run / "sam_embeddings").glob("*/*.npy") if not p.name.startswith("."))


@pytest.mark.slurm
def test_slurm_blocks_on_a_real_cluster(page, cluster, monkeypatch):
    """Sections 2, 3, 4 and 6 as a user runs them on the one-node cluster: the shard jobs fill the
    cache, the SAM-SP folds' prepare jobs find it full and their train jobs wait for them
    (``aftercorr``), status, merge once they have finished, a rerun that submits nothing, and the
    DDP job (module docstring)."""
    tmp = page["tmp"]
    run = tmp / "runs" / "samsp_acdc_5fold"
    seen: dict[str, object] = {}

    def before(block: str) -> None:
        if "scribmed cv --recipe samsp" in block and "cached" not in seen:
            wait_until_idle(600, "the shard jobs")
            seen["cached"] = _cached(run)
        if block.lstrip().startswith("scribmed cv status"):  # right after the submission
            first = read_submission(run, 1, "train")["job_id"]
            shown = subprocess.run(["scontrol", "show", "job", first], capture_output=True, text=True).stdout
            if "JobState=PENDING" in shown:  # still held (it may have started: the prepare jobs are short)
                assert "Dependency=aftercorr:" in shown, shown
        if "scribmed cv merge" in block:
            wait_until_idle(600, "the folds, the last of which merges too")

    results = run_blocks(page, "slurm", monkeypatch, before=before)
    _, submit, status, _, rerun, _ = [d for _, d in results]
    # section 2: two shard jobs encoded every case once; the folds then encoded nothing more
    n_cases = len(list(page["acdc"].rglob("*.h5")))
    assert len(seen["cached"]) == n_cases, (len(seen["cached"]), n_cases)
    assert _cached(run) == seen["cached"]
    assert sorted(p.name for p in tmp.glob("slurm-*_*.out")) != []  # the shard jobs' own logs
    # section 3: a prepare array and a train array waiting task by task for it
    prepare = {k: read_submission(run, k, "prepare")["job_id"] for k in (1, 2)}
    train = {k: read_submission(run, k, "train")["job_id"] for k in (1, 2)}
    assert len({j.split("_")[0] for j in prepare.values()}) == 1 and len({j.split("_")[0] for j in train.values()}) == 1
    assert all(f"fold {k} train: Slurm job {train[k]}" in submit.stdout for k in (1, 2))
    assert status.stdout.splitlines()[-1].startswith("3 not started")  # folds 3 to 5; 1 and 2 submitted
    for k in (1, 2):
        done_prepare, done_train = read_job_record(run, k, "prepare"), read_job_record(run, k, "train")
        assert done_prepare["state"] == done_train["state"] == "finished"
        assert float(done_train["started"]) >= float(done_prepare["ended"])
        assert (run / f"fold_{k}" / "train" / "sam" / "round_1").is_dir()
        assert job_state(train[k]) in ("COMPLETED", "")
    # merged once both had finished; the rerun found nothing to submit
    assert json.loads((run / "summary.json").read_text())["across_folds"]["n_folds"] == 2
    assert "every requested fold is finished: nothing to submit" in rerun.stdout
    # section 6: two ranks trained fold 1 (what rank 0 alone writes: tests/cluster/test_slurm_cluster.py)
    ddp_run = tmp / "runs" / "dmpls_acdc_ddp4"
    job = read_submission(ddp_run, 1, "train")["job_id"]
    wait_for_jobs(lambda: (ddp_run / "fold_1" / "fold.json").exists() and job_state(job) in ("COMPLETED", ""),
                  "the DDP fold", run=ddp_run)
    logs = sorted(p.name for p in (ddp_run / "logs").glob(f"{job}_*_log.out"))
    assert logs == [f"{job}_0_log.out", f"{job}_1_log.out"]  # one log per rank
    assert "global_rank=1(2)" in (ddp_run / "logs" / f"{job}_1_log.out").read_text()
    history = json.loads((ddp_run / "fold_1" / "train" / "history.json").read_text())
    assert history["epochs"][-1]["iteration"] == 2


def test_local_executor_block(page, monkeypatch):
    run_blocks(page, "local", monkeypatch)
    assert (page["tmp"] / "runs" / "dmpls_acdc_local" / "fold_1" / "fold.json").exists()


def test_torchrun_block(page, monkeypatch, one_thread):
    """In this process with one intra-op thread, as each rank of the replaced torchrun had (OMP_NUM_THREADS=1)."""
    run_blocks(page, "torchrun", monkeypatch)
    ddp = json.loads((page["tmp"] / "runs" / "dmpls_acdc_ddp" / "fold_1" / "fold.json").read_text())
    assert ddp["iterations"] == 2
