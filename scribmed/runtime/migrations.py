"""The one place older records are upgraded to the current schema, one version step at a time.

Readers call the matching ``upgrade_*`` once, where the record is read (``load_checkpoint``, the
SAM decoder reader, the ``run.json`` / ``fold.json`` / rounds / pseudo-label / post-processing readers), so the rest of
the code sees only current records (:mod:`scribmed.runtime.records`). Each upgrade reads the
record's version (no ``"schema"`` key: version 1), applies the steps ``v1 -> v2 -> ...`` up to the
current version and stamps it; a newer version or a schema of another kind is refused with a
one-line :class:`~scribmed.data.errors.DataError` naming the file. The input is not modified.

This module is on the bottom floor and knows no config class: what version-1 records did not store
is kept here as plain data, applied by record kind.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from scribmed.data.errors import DataError
from scribmed.runtime.records import (
    CHECKPOINT,
    CURRENT_VERSIONS,
    FOLD,
    HISTORY,
    POSTPROCESSING,
    PREDICTIONS,
    PSEUDO_LABELS,
    RUN,
    SAM_DECODER,
    SAM_ROUNDS,
    SCHEMA_KEY,
    parse_schema,
    schema_id,
)

__all__ = [
    "FINETUNE_CONFIG_V1_VALUES", "SEGMENTOR_CONFIG_V1_VALUES", "read_json_record", "upgrade_checkpoint",
    "upgrade_fold_record", "upgrade_history_record", "upgrade_postprocessing_record", "upgrade_predictions_record", "upgrade_pseudo_label_record", "upgrade_run_record", "upgrade_sam_decoder_checkpoint",
    "upgrade_sam_rounds_record",
]

PathLike = Optional[str | Path]
Step = Callable[[dict[str, Any]], dict[str, Any]]

#: the segmentor config fields added after the first checkpoints were written, as those runs used them
SEGMENTOR_CONFIG_V1_VALUES: dict[str, Any] = {
    "lr_horizon": None, "image_interp": "bilinear", "upsample": "transpose", "channels_last": False,
}
#: the SAM decoder fine-tuning config fields added later, as the runs before them used them
FINETUNE_CONFIG_V1_VALUES: dict[str, Any] = {"loss_resolution": "full"}
#: in version 1 every segmentor config held DMPLS's pseudo-label weight ``lam``; since version 2
#: only DMPLS's config has it, so it is dropped from the others' checkpoints and ``run.json`` configs
LAM_RECIPE = "dmpls"
V1_RUN_CONFIGS_WITH_LAM = ("mixsup",)  # SAM-SP's run.json already left it out
#: what version-1 checkpoints said instead of a schema (files without it are no scribmed checkpoint)
V1_CHECKPOINT_FORMAT = "scribmed-checkpoint-v1"
V1_SAM_DECODER_FORMAT = "scribmed-sam-decoder-v1"


def _version(record: Mapping[str, Any], kind: str, path: PathLike, v1_format: Optional[str] = None) -> Optional[int]:
    """The record's version; ``None`` for a file that is no record of ``kind`` (only with ``v1_format``)."""
    if not isinstance(record, Mapping):
        raise DataError(path, f"holds a {type(record).__name__}, expected a {kind} record (a mapping)")
    current = CURRENT_VERSIONS[kind]
    if SCHEMA_KEY in record:
        value = record[SCHEMA_KEY]
        parsed = parse_schema(value)
        if parsed is None or parsed[0] != kind:
            raise DataError(path, f"unknown schema {value!r} (expected {schema_id(kind)!r})")
        if parsed[1] > current:
            raise DataError(path, f"unsupported schema version {value!r} (this scribmed reads {kind} up to "
                            f"version {current}; written by a newer scribmed)")
        return parsed[1]
    if v1_format is None:
        return 1
    found = record.get("format")
    if found == v1_format:
        return 1
    family = v1_format.rsplit("-v", 1)[0] + "-"
    if isinstance(found, str) and found.startswith(family):
        raise DataError(path, f"unsupported format {found!r} (this scribmed reads {v1_format!r} and {schema_id(kind)!r})")
    return None


def _upgrade(record: Mapping[str, Any], kind: str, steps: Mapping[int, Step], path: PathLike,
             v1_format: Optional[str] = None) -> dict[str, Any]:
    version = _version(record, kind, path, v1_format)
    if version is None:  # not a scribmed record (e.g. a bare state dict): left as it is
        return record  # type: ignore[return-value]
    out = dict(record)
    for v in range(version, CURRENT_VERSIONS[kind]):
        out = steps[v](out)
        out = {SCHEMA_KEY: schema_id(kind, v + 1), **{k: val for k, val in out.items() if k != SCHEMA_KEY}}
    return out


# -- steps ----------------------------------------------------------------------------------------


def _filled(config: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with the fields it lacks taken from ``values`` (appended, its own order kept)."""
    return {**config, **{k: v for k, v in values.items() if k not in config}}


def _without_lam(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "lam"}


def _checkpoint_1_to_2(d: dict[str, Any]) -> dict[str, Any]:
    """The schema replaces ``format``; a segmentor checkpoint's config gets the fields it predates
    (:data:`SEGMENTOR_CONFIG_V1_VALUES`) and loses ``lam`` unless DMPLS wrote it. The instance
    trainer's checkpoints (they hold ``record``) change in nothing else."""
    d.pop("format", None)
    if "record" not in d and isinstance(d.get("config"), Mapping):
        config = _filled(d["config"], SEGMENTOR_CONFIG_V1_VALUES)
        d["config"] = config if d.get("recipe") == LAM_RECIPE else _without_lam(config)
    return d


def _checkpoint_2_to_3(d: dict[str, Any]) -> dict[str, Any]:
    """The instance recipes train in the segmentors' loop: their checkpoints take its layout.

    A version-2 instance checkpoint (it holds ``record``: the recipe config, class map and any
    further identity such as S4M's teacher stage) gets ``record`` reduced to that further identity,
    ``trainer`` / ``sampler_epoch`` (engine epochs of ``val_interval`` iterations), ``best``,
    ``val_dsb_score`` (its last validation) and an empty ``loss`` state; ``rng`` is ``None`` (every
    random draw of those runs derives from the seed and the iteration, so none is needed to resume);
    the history moves out of the checkpoint (``history.json`` holds it). Segmentor checkpoints change
    in nothing.
    """
    if "record" not in d or "trainer" in d:
        return d
    record = d.pop("record") or {}
    d["record"] = {k: v for k, v in record.items() if k not in ("config", "class_map")}
    iteration = int(d.pop("iteration", 0))
    interval = int((d.get("config") or {}).get("val_interval") or 1)
    epoch = math.ceil(iteration / max(interval, 1))
    d["trainer"] = {"iteration": iteration, "epoch": epoch}
    d["sampler_epoch"] = epoch
    d.setdefault("loss", {})
    d.setdefault("rng", None)
    d["best"] = {"metric": d.pop("best_metric", None), "iteration": d.pop("best_iteration", None)}
    epochs = (d.pop("history", None) or {}).get("epochs") or [{}]
    d["val_dsb_score"] = epochs[-1].get("val_dsb_score")
    return d


def _history_1_to_2(d: dict[str, Any]) -> dict[str, Any]:
    """The schema replaces ``format`` (the instance trainer wrote none); ``validation`` names the
    score the epochs hold (``val_dsb_score`` in the instance recipes' histories)."""
    d.pop("format", None)
    if "validation" not in d:
        instance = any("val_dsb_score" in e for e in d.get("epochs", []))
        d["validation"] = ({"metric": "val_dsb_score", "label": "validation DSB score"} if instance else
                           {"metric": "val_mean_dice", "label": "validation mean foreground Dice"})
    return d


def _finetune_config(config: Any) -> Any:
    return _filled(config, FINETUNE_CONFIG_V1_VALUES) if isinstance(config, Mapping) else config


def _sam_decoder_1_to_2(d: dict[str, Any]) -> dict[str, Any]:
    """The schema replaces ``format``; configs get ``loss_resolution`` as those runs used it; the
    resume identity of ``decoder_last.pt`` states ``weak_prompts`` / ``supervision`` (``None``:
    scribbles only, which version 1 said by leaving them out)."""
    d.pop("format", None)
    if "config" in d:
        d["config"] = _finetune_config(d["config"])
    if isinstance(d.get("identity"), Mapping):
        identity = dict(d["identity"])
        if "config" in identity:
            identity["config"] = _finetune_config(identity["config"])
        identity.setdefault("weak_prompts", None)
        identity.setdefault("supervision", None)
        d["identity"] = identity
    return d


def _run_1_to_2(d: dict[str, Any]) -> dict[str, Any]:
    """``task`` and ``supervision`` are always stated (version 1 left out ``"semantic"`` and
    ``None``); MixSup's config loses DMPLS's ``lam``."""
    d.setdefault("task", "semantic")
    d.setdefault("supervision", None)
    if d.get("recipe") in V1_RUN_CONFIGS_WITH_LAM and isinstance(d.get("config"), Mapping):
        d["config"] = _without_lam(d["config"])
    return d


def _fold_1_to_2(d: dict[str, Any]) -> dict[str, Any]:
    """Nothing changed but the schema key."""
    return d


def _sam_rounds_1_to_2(d: dict[str, Any]) -> dict[str, Any]:
    """The fine-tuning config gets ``loss_resolution``; ``weak_prompts`` / ``supervision`` are
    always stated (``None``: scribbles only, which version 1 said by leaving them out)."""
    if "finetune" in d:
        d["finetune"] = _finetune_config(d["finetune"])
    d.setdefault("weak_prompts", None)
    d.setdefault("supervision", None)
    return d


def _pseudo_labels_1_to_2(d: dict[str, Any]) -> dict[str, Any]:
    """``weak_prompts`` is always stated (``None``: scribbles only)."""
    d.setdefault("weak_prompts", None)
    return d


# -- upgrades -------------------------------------------------------------------------------------


def upgrade_checkpoint(d: Mapping[str, Any], path: PathLike = None) -> dict[str, Any]:
    """A training checkpoint (segmentor or instance trainer) in the current :data:`CHECKPOINT` schema.

    A dict that is no scribmed checkpoint (neither ``schema`` nor the version-1 ``format``, e.g. a
    bare state dict) is returned as it is.

    Raises:
        DataError: a newer version, another kind's schema, or an unknown checkpoint format.
    """
    return _upgrade(d, CHECKPOINT, {1: _checkpoint_1_to_2, 2: _checkpoint_2_to_3}, path, V1_CHECKPOINT_FORMAT)


def upgrade_sam_decoder_checkpoint(d: Mapping[str, Any], path: PathLike = None) -> dict[str, Any]:
    """A fine-tuned SAM decoder file in the current :data:`SAM_DECODER` schema (others, e.g. a
    SAM checkpoint from elsewhere, are returned as they are). Raises ``DataError`` like
    :func:`upgrade_checkpoint`."""
    return _upgrade(d, SAM_DECODER, {1: _sam_decoder_1_to_2}, path, V1_SAM_DECODER_FORMAT)


def upgrade_run_record(d: Mapping[str, Any], path: PathLike = None) -> dict[str, Any]:
    """A cross-validation ``run.json`` in the current :data:`RUN` schema (``DataError``: newer or foreign)."""
    return _upgrade(d, RUN, {1: _run_1_to_2}, path)


def upgrade_fold_record(d: Mapping[str, Any], path: PathLike = None) -> dict[str, Any]:
    """A finished fold's ``fold.json`` in the current :data:`FOLD` schema (``DataError``: newer or foreign)."""
    return _upgrade(d, FOLD, {1: _fold_1_to_2}, path)


def upgrade_sam_rounds_record(d: Mapping[str, Any], path: PathLike = None) -> dict[str, Any]:
    """The ``run.json`` of SAM pseudo-label rounds in the current :data:`SAM_ROUNDS` schema."""
    return _upgrade(d, SAM_ROUNDS, {1: _sam_rounds_1_to_2}, path)


def upgrade_pseudo_label_record(d: Mapping[str, Any], path: PathLike = None) -> dict[str, Any]:
    """A pseudo-label folder's ``pseudo_labels.json`` in the current :data:`PSEUDO_LABELS` schema."""
    return _upgrade(d, PSEUDO_LABELS, {1: _pseudo_labels_1_to_2}, path)


def upgrade_postprocessing_record(d: Mapping[str, Any], path: PathLike = None) -> dict[str, Any]:
    """A run's ``postprocessing.json`` in the current :data:`POSTPROCESSING` schema (version 1 is the
    first; ``DataError``: newer or foreign)."""
    return _upgrade(d, POSTPROCESSING, {}, path)


def upgrade_predictions_record(d: Mapping[str, Any], path: PathLike = None) -> dict[str, Any]:
    """A predict output folder's ``predictions.json`` in the current :data:`PREDICTIONS` schema
    (version 1 is the first; ``DataError``: newer or foreign)."""
    return _upgrade(d, PREDICTIONS, {}, path)


def upgrade_history_record(d: Mapping[str, Any], path: PathLike = None) -> dict[str, Any]:
    """A training run's ``history.json`` in the current :data:`HISTORY` schema (``DataError``: newer or foreign)."""
    return _upgrade(d, HISTORY, {1: _history_1_to_2}, path)


def read_json_record(path: str | Path, upgrade: Callable[[Mapping[str, Any], PathLike], dict[str, Any]]) -> dict[str, Any]:
    """Read a JSON record and ``upgrade`` it (e.g. ``read_json_record(p, upgrade_run_record)``).

    Raises:
        DataError: a missing or unreadable file, or what ``upgrade`` refuses.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(path, f"unreadable record ({type(exc).__name__}: {str(exc)[:120]})") from None
    return upgrade(data, path)
