"""Every shipped bundle's metadata.json, large_files.yml and configs state what the bundle does
(text and JSON only: milliseconds)."""

from __future__ import annotations

import json
import re

import pytest

from scribmed.runtime.shipped import shipped_dir

BUNDLES = shipped_dir("bundles")
SEMANTIC = ("dmpls_acdc", "dmpls_mscmr", "dmpls_chaos", "samsp_acdc", "samsp_mscmr", "samsp_chaos",
            "mixsup_acdc", "mixsup_chaos", "nnunet_pl_acdc")
INSTANCE = ("sesam_dsb2018", "s4m_dsb2018", "wish_dsb2018")
NUMBER = re.compile(r"(?<![\w.])\d+\.\d+")


def _key(text: str, key: str) -> str:
    """The raw value of a top-level YAML key (comments cut)."""
    line = next(l for l in text.splitlines() if l.startswith(f"{key}:"))
    return line.split(":", 1)[1].split("   #")[0].split("  #")[0].strip()


@pytest.mark.parametrize("name", SEMANTIC + INSTANCE)
def test_metadata_states_the_output_written_and_labels_every_figure(name: str) -> None:
    root = BUNDLES / name
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    readme = (root / "docs" / "README.md").read_text()
    pred = meta["network_data_format"]["outputs"]["pred"]
    if name in SEMANTIC:
        assert (pred["format"], pred["num_channels"], pred["dtype"]) == ("labels", 1, "uint8")
        assert pred["channel_def"]["0"] == "background" and pred["value_range"] == [0, len(pred["channel_def"]) - 1]
        assert meta["pred_classes"].startswith("uint8 label map")
    else:
        assert (pred["format"], pred["num_channels"], pred["dtype"]) == ("instance", 1, "int32")
    metrics = meta["eval_metrics"]
    assert "measured_setting" in metrics and "paper_source" in metrics
    assert all(k.startswith(("measured_", "paper_")) for k in metrics), metrics
    in_readme = {float(x) for x in NUMBER.findall(readme)}
    for key, value in metrics.items():
        if isinstance(value, (int, float)):  # every figure is the README's: measured there, or the paper's table
            assert float(value) in in_readme, (key, value)
    if any(k.startswith("paper_") and isinstance(v, float) for k, v in metrics.items()):
        assert "the paper's number" in metrics["paper_source"]


@pytest.mark.parametrize("name", SEMANTIC + INSTANCE)
def test_models_folder_and_large_files(name: str) -> None:
    root = BUNDLES / name
    large = (root / "large_files.yml").read_text()
    entries = re.findall(r'- path: "([^"]*)"\n\s+url: "([^"]*)"\n\s+hash_val: "([^"]*)"\n\s+hash_type: "([^"]*)"', large)
    assert entries == [("models/model.pt", "", "", "")]  # no released weights: url and hash empty
    train = (root / "configs" / "train.yaml").read_text()
    infer = (root / "configs" / "inference.yaml").read_text()
    assert _key(train, "model_path") == _key(infer, "ckpt_path") == "\"$@output_dir + '/models/model.pt'\""
    assert "@model_path" in train.split("\nrun:")[1]  # the run ends by writing it
    readme = (root / "docs" / "README.md").read_text()
    assert "large_files.yml" in readme and "no released weights" in readme.lower()


@pytest.mark.parametrize("name", [n for n in SEMANTIC if n != "nnunet_pl_acdc"])  # nnU-Net plans its own size
def test_semantic_bundles_take_size_from_the_checkpoint_and_limit_cpu_time(name: str) -> None:
    configs = BUNDLES / name / "configs"
    train = (configs / "train.yaml").read_text()
    assert _key(train, "max_cpu_hours") == "4.0"
    assert train.count('max_cpu_hours: "@max_cpu_hours"') == 2  # recorded in the config, given to the trainer
    infer = (configs / "inference.yaml").read_text()
    assert _key(infer, "size") == "null"
    assert "checkpoint_size(@ckpt_path, @size, @in_channels)" in (configs / "evaluate.yaml").read_text()
    assert "@model_path" in (configs / "multi_gpu_train.yaml").read_text()
