"""Self-contained code examples in the user docs run as written."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_recipes_example_runs():
    text = (DOCS / "recipes.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "docs/recipes.md lost its example"
    scope: dict = {}
    exec(compile(blocks[0], "docs/recipes.md", "exec"), scope)
    assert scope["main"].shape == (1, 4, 256, 256)
    assert float(scope["loss"].detach()) > 0 and set(scope["parts"]) >= {"pce", "dice", "alpha"}


def test_monai_sam_finetuning_example_runs_at_batch_2():
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "recipes.md").read_text(), re.S)
    example = next(b for b in blocks if "collate_prompts" in b)
    scope: dict = {}
    exec(compile(example, "docs/recipes.md", "exec"), scope)
    batch, sam = scope["batch"], scope["sam"]
    assert tuple(batch["image"].shape) == (2, 96, 96) and len(batch["prompts"]) == 2
    assert [p["classes"] for p in batch["prompts"]] == [[3], [1, 3]]  # ragged: one prompt dict per slice
    assert float(scope["loss"].detach()) > 0 and scope["loss_fn"].last.keys() == {"ce"}
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in sam.mask_decoder.parameters())


def test_docs_link_targets_exist():
    for md in [*DOCS.glob("*.md"), DOCS.parent / "README.md"]:
        for target in re.findall(r"\]\(([^)#]+\.md)\)", md.read_text()):
            assert (md.parent / target).exists(), f"{md.name} links to missing {target}"


def _table_defaults(text: str) -> dict[str, str]:
    """``{flag: default}`` of a docs flag table (``| `--flag`, `--other` | meaning | default |``): the
    default cell's leading value, one per flag when a row names several (``12, 256 (paper)``)."""
    found: dict[str, str] = {}
    for row in re.findall(r"^\| (`--[^|]*) \|[^|]*\| ([^|]*) \|$", text, re.M):
        flags = re.findall(r"`(--[\w-]+)", row[0])
        values = [v.strip() for v in re.sub(r"\(.*?\)", "", row[1]).split(",")]
        for flag, value in zip(flags, values if len(values) == len(flags) else [values[0]] * len(flags)):
            found[flag] = value.strip("` ").split(" ")[0]
    return found


def _same(doc: str, value: object) -> bool:
    try:
        return float(doc) == float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return doc == str(value)


def test_documented_defaults_are_the_code_defaults():
    """The defaults the flag tables of cross_validation.md and recipes.md state are the code's."""
    from scribmed.recipes import build
    from scribmed.sam.stage_config import SamStageConfig

    cfg, sam = build("dmpls").config, SamStageConfig()
    code = {"--iterations": cfg.iterations, "--batch-size": cfg.batch_size, "--size": cfg.size[0],
            "--val-interval": cfg.epoch_length, "--device": cfg.device, "--seed": cfg.seed,
            "--max-cpu-hours": cfg.max_cpu_hours, "--image-interp": cfg.image_interp, "--upsample": cfg.upsample,
            "--amp": "auto" if cfg.amp is True else cfg.amp, "--split": "auto"}
    docs = _table_defaults((DOCS / "cross_validation.md").read_text())
    assert {f: docs.get(f) for f in code if not _same(docs.get(f, ""), code[f])} == {}
    sam_code = {"--rounds": sam.rounds, "--sam-epochs": sam.epochs, "--sam-lr": sam.lr, "--n-points": sam.n_points,
                "--sam-backend": sam.backend, "--sam-device": sam.device}
    from scribmed.recipes.mixsup.recipe import WEAK_OPTIONS
    from scribmed.sam.weak_prompting import WeakPromptConfig

    weak = WeakPromptConfig()
    sam_code.update({"--" + dest.replace("_", "-"): getattr(weak, field) for dest, field in WEAK_OPTIONS.items()})
    docs = _table_defaults((DOCS / "recipes.md").read_text())
    compared = {f: docs[f] for f in sam_code if f in docs}
    assert len(compared) >= 10 and {f: v for f, v in compared.items() if not _same(v, sam_code[f])} == {}


def test_nnunet_pl_flag_table_states_the_code_defaults():
    from scribmed.recipes.nnunet_pl.config import NNUNetPLConfig

    cfg = NNUNetPLConfig()
    code = {"--configuration": cfg.configuration, "--epochs": cfg.epochs, "--iterations-per-epoch": cfg.iterations_per_epoch,
            "--val-iterations-per-epoch": cfg.val_iterations_per_epoch, "--nnunet-checkpoint": cfg.checkpoint,
            "--nnunet-planner": cfg.planner, "--num-workers": cfg.num_workers, "--max-cpu-hours": cfg.max_cpu_hours}
    docs = _table_defaults((DOCS / "recipes.md").read_text())
    assert {f: docs.get(f) for f in code if not _same(docs.get(f, ""), code[f])} == {}
