"""`scribmed bundle list` / `scribmed bundle export`: shipped bundles copied into folders of the user's."""

from __future__ import annotations

import json

import pytest

from scribmed.bundles.export import bundle_names, export_bundle
from scribmed.cli import main
from scribmed.data.errors import DataError
from scribmed.runtime.shipped import shipped_dir

SHIPPED = {"dmpls_acdc", "dmpls_mscmr", "dmpls_chaos", "samsp_acdc", "samsp_mscmr", "samsp_chaos",
           "mixsup_acdc", "mixsup_chaos", "sesam_dsb2018", "s4m_dsb2018", "wish_dsb2018", "nnunet_pl_acdc"}


def test_list_names_every_shipped_bundle(capsys):
    assert SHIPPED <= set(bundle_names())
    assert main(["bundle", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SHIPPED)


def test_export_copies_configs_docs_and_license_but_no_runs(tmp_path, capsys):
    src = shipped_dir("bundles") / "dmpls_acdc"
    (src / "runs").mkdir(exist_ok=True)  # a left-over run folder in a source tree is never exported
    try:
        assert main(["bundle", "export", "dmpls_acdc", str(tmp_path / "mine")]) == 0
    finally:
        if not any((src / "runs").iterdir()):
            (src / "runs").rmdir()
    dest = tmp_path / "mine"
    assert "--bundle_root" in capsys.readouterr().out
    assert {p.name for p in dest.iterdir()} >= {"configs", "docs", "LICENSE", "large_files.yml"}
    assert not (dest / "runs").exists()
    meta = json.loads((dest / "configs" / "metadata.json").read_text())
    assert meta == json.loads((src / "configs" / "metadata.json").read_text())


@pytest.mark.parametrize("name", ["dmpls_acdc", "mixsup_acdc", "sesam_dsb2018"])
def test_exported_bundle_points_at_itself(name, tmp_path):
    """bundle_root is the exported folder; comments, commands and doc links do not lead into the source tree."""
    import yaml

    dest = export_bundle(name, tmp_path / "mine")
    for config in sorted((dest / "configs").glob("*.yaml")):
        text = config.read_text()
        assert f"bundles/{name}/" not in text, config.name
        root = yaml.safe_load(text).get("bundle_root")
        assert root is None or root == str(dest.resolve()), config.name  # overlays define none
    assert yaml.safe_load((dest / "configs" / "train.yaml").read_text())["bundle_root"] == str(dest.resolve())
    readme = (dest / "docs" / "README.md").read_text()
    assert "](../" not in readme and f"bundles/{name}/" not in readme
    assert f"--config_file {dest.resolve()}/configs/train.yaml" in readme.replace("\\\n    ", "")
    source = (shipped_dir("bundles") / name / "docs" / "README.md").read_text()
    if "../../../docs/" in source:  # a link into scribmed's docs becomes text naming the document
        assert "(scribmed documentation: `docs/" in readme


def test_export_refuses_unknown_names_and_non_empty_targets(tmp_path):
    with pytest.raises(DataError, match="no shipped bundle 'nope'; shipped: .*dmpls_acdc"):
        export_bundle("nope", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not an empty folder"):
        export_bundle("dmpls_acdc", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_default_output_dir_is_under_the_current_directory():
    """A bundle run never writes into the bundle (source tree or installed package) by default."""
    import yaml

    for name in SHIPPED:
        for config in ("train.yaml", "inference.yaml"):
            cfg = yaml.safe_load((shipped_dir("bundles") / name / "configs" / config).read_text())
            assert cfg["output_dir"].startswith(f"$'runs/{name}/fold_'"), (name, config, cfg["output_dir"])
