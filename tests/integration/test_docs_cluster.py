"""Every command of docs/cluster.md runs, up to where a real cluster would be needed.

The blocks run in page order within four independent tests: the GPU check, the Slurm sequence
(submit, status, merge, rerun, the DDP job), the local executor and torchrun. A ``scribmed``
command is expanded by bash and run through the CLI's entry point in the test's process; so is
the ``torchrun ... -m scribmed`` command (torchrun's own options parsed by torchrun's parser), as
the one process of a torchrun group of one (a fold trained by two real gloo ranks, rank 0 alone
writing it: tests/cluster/test_slurm_cluster.py). The GPU check's ``python benchmarks/gpu_check.py`` runs the
script's ``main`` in the test's process too. The other commands run in bash.

What stands in for the cluster and the data (the page says so too):

* ``sbatch`` / ``srun`` are scripts that record the job script (or ``--wrap`` command) and answer
  like Slurm; nothing is executed by them;
* ``$ACDC`` is a 100-patient ACDC-layout phantom (the ``acdc_5fold`` split names 100 patients);
* ``--iterations 60000`` becomes 2 iterations of batch 2 at 32x32, ``--nproc_per_node 4``
  becomes 2, the GPU check runs with ``--quick``, and the local executor (section 5) runs fold 1
  only with 2 workers.

``scribmed cv merge`` is expected to stop at "no finished fold": the folds run on the cluster.
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
from doc_blocks import bash_blocks, recorded_calls

from scribmed.cli import build_parser, main
from scribmed.data.phantoms import write_phantom_dataset

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "cluster.md"

FAKE_SBATCH = """#!/bin/sh
n=$(ls "$FAKE_SLURM_DIR" | grep -c '^job_')
id=$((5000 + n))
mkdir -p "$FAKE_SLURM_DIR/job_$id"
printf '%s\\n' "$@" > "$FAKE_SLURM_DIR/job_$id/args"
for last; do :; done
if [ -f "$last" ]; then cp "$last" "$FAKE_SLURM_DIR/job_$id/script.sh"; fi
echo "Submitted batch job $id"
"""


def adapt(block: str, acdc: Path, tmp: Path) -> str:
    """The test's substitutions (module docstring)."""
    block = block.replace("--iterations 60000", "--iterations 2 --size 32 --batch-size 2")
    block = block.replace("--nproc_per_node 4", "--nproc_per_node 2")
    block = block.replace("python benchmarks/gpu_check.py", "python benchmarks/gpu_check.py --quick")
    block = block.replace("--executor local --workers 4", "--executor local --workers 2 --fold 1")
    block = block.replace("ACDC=/data/ACDC", f"ACDC={shlex.quote(str(acdc))}")
    return block.replace("runs/", f"{tmp}/runs/")


@pytest.fixture(scope="module")
def acdc(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docs_cluster") / "ACDC"
    return write_phantom_dataset("cardiac", "acdc-h5", root, n_patients=100, seed=5, size=(48, 48), slices=(2, 2))


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
    """The page's blocks, the stand-in ``sbatch``/``srun`` and the environment every block runs in."""
    text = DOC.read_text()
    blocks = bash_blocks(text)
    assert len(blocks) >= 9, "docs/cluster.md lost commands"
    tmp = tmp_path_factory.mktemp("cluster_page")
    bindir, record = tmp / "bin", tmp / "slurm"
    bindir.mkdir()
    record.mkdir()
    (bindir / "sbatch").write_text(FAKE_SBATCH)
    (bindir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for f in bindir.iterdir():
        f.chmod(0o755)
    env = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
           "PATH": os.pathsep.join([str(bindir), str(Path(sys.executable).parent), os.environ["PATH"]]),
           "FAKE_SLURM_DIR": str(record), "OMP_NUM_THREADS": "1"}
    return {"text": text, "blocks": blocks, "variables": adapt(blocks[0], acdc, tmp), "tmp": tmp, "env": env,
            "record": record, "acdc": acdc}


def scribmed_calls(script: str, env: dict) -> list[list[str]]:
    """The argument lists of the ``scribmed`` commands ``script`` runs, as bash expands them."""
    return [call[1:] for call in recorded_calls(script, ("scribmed",), env, REPO)]


def run_in_process(argv: list[str], page, monkeypatch, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """``scribmed ARGV`` through the console script's entry point in this process, in the page's
    environment (stand-in ``sbatch`` first on ``PATH``) plus ``extra_env``; a new Python would spend
    most of the test importing torch and MONAI."""
    for var in ("PATH", "FAKE_SLURM_DIR", "OMP_NUM_THREADS"):
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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_under_torchrun(script: str, page, monkeypatch) -> subprocess.CompletedProcess:
    """The block's ``torchrun OPTIONS -m scribmed ARGS``: OPTIONS must parse with torchrun's own
    parser, and ``scribmed ARGS`` runs in this process with torchrun's environment for one process
    (a fold of two real ranks: tests/cluster/test_slurm_cluster.py)."""
    from torch.distributed.run import get_args_parser

    (call,) = recorded_calls(script, ("torchrun",), page["env"], REPO)
    launch = get_args_parser().parse_args(call[1:])
    assert launch.module and launch.training_script == "scribmed", call
    assert launch.standalone and launch.nproc_per_node == "2", call  # the adapted --nproc_per_node 4
    torchrun_env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": str(_free_port())}
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


def run_blocks(page, kind: str, monkeypatch) -> list[tuple[str, subprocess.CompletedProcess]]:
    """Run the page's blocks of ``kind`` in page order (each after the variables block).

    A block that is a ``scribmed`` command runs in this process (:func:`run_in_process`) with the
    arguments bash expands it to, a ``torchrun -m scribmed`` block too (:func:`run_under_torchrun`),
    and the GPU check (:func:`run_gpu_check`); the others (``sbatch``) run in bash.
    """
    results = []
    for block in page["blocks"][1:]:
        if _kind(block) != kind:
            continue
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
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=page["env"],
                                  capture_output=True, text=True, timeout=900)
        results.append((block, done))
        if "scribmed cv merge" in block:  # the folds have not run: that needs the cluster
            assert done.returncode == 1 and "no finished fold" in done.stderr, done.stderr[-2000:]
        else:
            assert done.returncode == 0, f"{block}\n{done.stderr[-3000:]}"
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


def test_slurm_blocks(page, monkeypatch):
    results = run_blocks(page, "slurm", monkeypatch)
    record = page["record"]
    # the shard array was submitted with a command scribmed accepts for every task
    jobs = sorted(record.iterdir())
    wrap = next(a for a in (jobs[0] / "args").read_text().splitlines() if a.startswith("--wrap="))[len("--wrap="):]
    argv = shlex.split(wrap.replace("${SLURM_ARRAY_TASK_ID}", "3"))
    parsed = build_parser().parse_args(argv[1:])
    assert argv[0] == "scribmed" and parsed.shard == (3, 4) and str(parsed.sam_cache).endswith("sam_embeddings")
    assert "--array=1-4" in (jobs[0] / "args").read_text()
    # SAM-SP: a prepare array and a train array waiting task by task for it, with the flags' resources
    prepare, train = (jobs[1] / "script.sh").read_text(), (jobs[2] / "script.sh").read_text()
    for line in ("#SBATCH --array=0-4%5", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --mem=64G", "#SBATCH --time=720", "module load cuda/12.4"):
        assert line in prepare and line in train
    assert f"#SBATCH --dependency=aftercorr:{jobs[1].name.split('_')[1]}" in train
    status = next(d for b, d in results if b.strip().startswith("scribmed cv status"))
    assert status.stdout.count("pending") == 6  # five folds and the summary line
    # the rerun submitted nothing twice
    rerun = [d for b, d in results if "--executor slurm" in b and "samsp" in b][1]
    assert rerun.stdout.count("not submitted again") == 5
    # the DDP Slurm job asks for 4 tasks with 4 GPUs
    ddp4 = (jobs[-1] / "script.sh").read_text()
    assert "#SBATCH --ntasks-per-node=4" in ddp4 and "#SBATCH --gpus-per-node=4" in ddp4


def test_local_executor_block(page, monkeypatch):
    run_blocks(page, "local", monkeypatch)
    assert (page["tmp"] / "runs" / "dmpls_acdc_local" / "fold_1" / "fold.json").exists()


def test_torchrun_block(page, monkeypatch, one_thread):
    """In this process with one intra-op thread, as each rank of the replaced torchrun had (OMP_NUM_THREADS=1)."""
    run_blocks(page, "torchrun", monkeypatch)
    ddp = json.loads((page["tmp"] / "runs" / "dmpls_acdc_ddp" / "fold_1" / "fold.json").read_text())
    assert ddp["iterations"] == 2
