"""Every shipped bundle initialises with MONAI's own API on real data, builds its properties and writes nothing.

The snippet of issue 13, for the train, inference and evaluate workflows of every bundle on
``../shared/data`` (ACDC, MSCMR, CHAOS T2, DSB2018). How long they take is measured by
``benchmarks/bundle_init.py``, not here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import REPO
from conftest import SHARED_DATA as DATA

BUNDLES = ["dmpls_acdc", "dmpls_chaos", "dmpls_mscmr", "samsp_acdc", "samsp_chaos", "samsp_mscmr", "mixsup_acdc",
           "mixsup_chaos", "sesam_dsb2018", "s4m_dsb2018", "wish_dsb2018", "nnunet_pl_acdc"]
SEMANTIC = {n for n in BUNDLES if not n.endswith("dsb2018")}
RECIPE_FOLD = {n for n in BUNDLES if n.endswith("dsb2018")} | {"nnunet_pl_acdc"}  # train#trainer: RecipeFoldTrainer
# the shared data lacks some split patients (MSCMR test subjects, four CHAOS T2 patients): allow_missing, as a user would
DATASETS = {"acdc": ("ACDC", {}), "mscmr": ("MSCMR", {"allow_missing": True}),
            "chaos": ("CHAOS_T2", {"layout": "chaos-t2-nifti", "allow_missing": True}), "dsb2018": ("DSB2018", {})}
WORKFLOWS = {"train": (["train.yaml"], "train"), "inference": (["inference.yaml"], "inference"),
             "evaluate": (["train.yaml", "evaluate.yaml"], "train")}

pytestmark = pytest.mark.realdata


def _files(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for n in names:
                st = (Path(dirpath) / n).stat()
                out[os.path.join(dirpath, n)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
@pytest.mark.parametrize("name", BUNDLES)
def test_initialise_builds_objects_only(name, workflow, tmp_path, monkeypatch, restore_torch_flags):
    from monai.bundle import ConfigWorkflow

    folder, overrides = DATASETS[name.rsplit("_", 1)[1]]
    data = DATA / folder
    if not data.is_dir():
        pytest.skip(f"{data} not present")
    bundle = REPO / "bundles" / name
    files, kind = WORKFLOWS[workflow]
    configs = [str(bundle / "configs" / f) for f in files]
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path, bundle, data)
    wf = ConfigWorkflow(config_file=configs if len(configs) > 1 else configs[0],
                        meta_file=str(bundle / "configs" / "metadata.json"), workflow_type=kind,
                        bundle_root=str(bundle), dataset_dir=str(data), **overrides)
    wf.initialize()
    assert wf.check_properties() == []
    assert _files(tmp_path, bundle, data) == before, "initialize() wrote files"
    if workflow != "inference" and name in SEMANTIC and name not in RECIPE_FOLD:
        assert not wf.parser.get_parsed_content("train#dataset").built  # the slice cache waits for run()
    if workflow != "inference" and name in SEMANTIC and name in RECIPE_FOLD:  # the fold's cases are listed by run()
        assert "not run yet" in repr(wf.parser.get_parsed_content("train#dataset"))
    if name in RECIPE_FOLD and workflow == "inference":  # the checkpoint is read when the workflow runs
        assert "not run yet" in repr(wf.parser.get_parsed_content("loaded"))
