"""How long every shipped bundle's workflows take to initialise with MONAI's own API, and what they write.

For each bundle and workflow (``train``, ``infer``, ``evaluate`` = ``train.yaml`` + ``evaluate.yaml``
as a train-type workflow),
in a fresh subprocess and an empty working directory::

    wf = ConfigWorkflow(config_file=..., meta_file=..., workflow_type=..., bundle_root=...,
                        dataset_dir=...)
    wf.initialize(); wf.check_properties()

and reports the seconds, ``check_properties()`` and every file created or changed under the
working directory, the bundle folder and the dataset folder. Real data: the subfolder of the data
folder (``--data-root DIR`` or ``$SCRIBMED_DATA``) each chosen bundle trains on, ``ACDC/``,
``MSCMR/``, ``CHAOS_T2/`` (the CHAOS bundles) or ``DSB2018/``. A workflow that takes longer than
``--timeout`` seconds is stopped and reported as such.

Usage::

    python benchmarks/bundle_init.py [--bundles samsp_acdc,dmpls_acdc] [--timeout 120] [--out runs/bundle_init.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data_root import add_data_root, dataset_dir  # noqa: E402

#: the data each bundle initialises on, and the overrides the local data copy needs
DATASETS: dict[str, tuple[str, dict[str, Any]]] = {
    "acdc": ("ACDC", {}),
    "mscmr": ("MSCMR", {"allow_missing": True}),  # the local copy has no MSCMR test subjects
    "chaos": ("CHAOS_T2", {"layout": "chaos-t2-nifti", "allow_missing": True}),
    "dsb2018": ("DSB2018", {}),
}
#: workflow -> (config files, MONAI workflow_type); the evaluate overlay extends train.yaml, so it is a train workflow
WORKFLOWS = {"train": (["train.yaml"], "train"), "infer": (["inference.yaml"], "infer"),
             "evaluate": (["train.yaml", "evaluate.yaml"], "train")}

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from monai.bundle import ConfigWorkflow
spec = json.loads(sys.argv[1])
wf = ConfigWorkflow(config_file=spec["config_file"], meta_file=spec["meta_file"], workflow_type=spec["workflow_type"],
                    bundle_root=spec["bundle_root"], dataset_dir=spec["dataset_dir"], **spec["overrides"])
t1 = time.perf_counter()
wf.initialize()
missing = wf.check_properties()
t2 = time.perf_counter()
print(json.dumps({"import_and_parse_s": t1 - t0, "initialize_and_check_s": t2 - t1, "check_properties": missing}))
"""


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    files: dict[str, tuple[int, int]] = {}
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                p = Path(dirpath) / name
                try:
                    st = p.stat()
                except OSError:
                    continue
                files[str(p)] = (st.st_size, st.st_mtime_ns)
    return files


def bundle_dataset(name: str) -> tuple[str, dict[str, Any]]:
    """The data folder's subfolder the bundle initialises on, and its overrides."""
    folder, overrides = DATASETS[name.rsplit("_", 1)[1]]
    return folder, dict(overrides)


def measure(name: str, workflow: str, timeout: float, data: Path) -> dict[str, Any]:
    bundle = REPO / "bundles" / name
    files, workflow_type = WORKFLOWS[workflow]
    configs = [str(bundle / "configs" / c) for c in files]
    _, overrides = bundle_dataset(name)
    spec = {"config_file": configs if len(configs) > 1 else configs[0],
            "meta_file": str(bundle / "configs" / "metadata.json"), "workflow_type": workflow_type,
            "bundle_root": str(bundle), "dataset_dir": str(data), "overrides": overrides}
    with tempfile.TemporaryDirectory() as cwd:
        before = snapshot(Path(cwd), bundle, data)
        t0 = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=cwd, capture_output=True,
                                  text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})
        except subprocess.TimeoutExpired:
            return {"bundle": name, "workflow": workflow, "seconds": None, "timed_out": timeout}
        seconds = time.perf_counter() - t0
        after = snapshot(Path(cwd), bundle, data)
        written = sorted(p.replace(cwd, "<cwd>") for p in after if before.get(p) != after[p])
    row: dict[str, Any] = {"bundle": name, "workflow": workflow, "seconds": seconds, "written": written}
    if done.returncode != 0:
        row["error"] = (done.stderr.strip().splitlines() or ["?"])[-1][:300]
    else:
        row.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return row


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundles", help="comma-separated bundle names (default: every shipped bundle)")
    ap.add_argument("--workflows", default="train,infer,evaluate")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a workflow counts as too slow")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bundle_init.json")
    add_data_root(ap)
    args = ap.parse_args(argv)
    names = args.bundles.split(",") if args.bundles else sorted(p.name for p in (REPO / "bundles").iterdir()
                                                                if (p / "configs").is_dir())
    folders = {folder: dataset_dir(args, folder) for folder in dict.fromkeys(bundle_dataset(n)[0] for n in names)}
    rows = []
    print("| bundle | workflow | seconds | check_properties | written |")
    print("|---|---|---|---|---|")
    for name in names:
        for workflow in args.workflows.split(","):
            row = measure(name, workflow, args.timeout, folders[bundle_dataset(name)[0]])
            rows.append(row)
            secs = f"{row['seconds']:.1f}" if row.get("seconds") is not None else f"> {args.timeout:.0f} (stopped)"
            check = row.get("error") or row.get("check_properties")
            print(f"| {name} | {workflow} | {secs} | {check} | {len(row.get('written', []))} files |", flush=True)
    from scribmed.runtime.files import atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
