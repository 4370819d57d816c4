"""Schema identifiers of the records scribmed writes and reads back, and stamping them on write.

Every such record carries ``"schema": "<kind>/<version>"`` (first key). A record without the key
is version 1: what the code before versioning wrote (checkpoints and SAM decoder files then said
``"format": "scribmed-checkpoint-v1"`` / ``"scribmed-sam-decoder-v1"``). Writers call
:func:`stamp`; readers call the matching upgrade of :mod:`scribmed.runtime.migrations` once, where
the record is read, so the rest of the code sees only current records.

Kinds (current versions in :data:`CURRENT_VERSIONS`):

* :data:`CHECKPOINT` (``scribmed.checkpoint``): training checkpoints ``last.pt`` / ``best.pt`` of
  every recipe's training loop (:class:`~scribmed.training.run_record.RunRecorder`);
* :data:`HISTORY` (``scribmed.history``): a training run's ``history.json`` (same writer);
* :data:`SAM_DECODER` (``scribmed.sam_decoder``): fine-tuned SAM mask decoders
  ``decoder_best.pt`` / ``decoder_last.pt`` (:mod:`scribmed.sam.decoder_checkpoint`);
* :data:`RUN` (``scribmed.run``): a cross-validation run's ``run.json``;
* :data:`FOLD` (``scribmed.fold``): a finished fold's ``fold.json``;
* :data:`SAM_ROUNDS` (``scribmed.sam_rounds``): the ``run.json`` of SAM pseudo-label rounds
  (:mod:`scribmed.sam.rounds`);
* :data:`PSEUDO_LABELS` (``scribmed.pseudo_labels``): a pseudo-label folder's ``pseudo_labels.json``;
* :data:`POSTPROCESSING` (``scribmed.postprocessing``): a cross-validation run's
  ``postprocessing.json``, the post-processing chosen on its out-of-fold predictions
  (:mod:`scribmed.crossval.postprocessing`);
* :data:`PREDICTIONS` (``scribmed.predictions``): the ``predictions.json`` of a ``scribmed predict``
  output folder, the models and settings its files were made with (:mod:`scribmed.predict`).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

__all__ = [
    "CHECKPOINT", "CURRENT_VERSIONS", "FOLD", "HISTORY", "POSTPROCESSING", "PREDICTIONS", "PSEUDO_LABELS", "RUN", "SAM_DECODER", "SAM_ROUNDS", "SCHEMA_KEY",
    "parse_schema", "schema_id", "stamp",
]

SCHEMA_KEY = "schema"

CHECKPOINT = "scribmed.checkpoint"
HISTORY = "scribmed.history"
SAM_DECODER = "scribmed.sam_decoder"
RUN = "scribmed.run"
FOLD = "scribmed.fold"
SAM_ROUNDS = "scribmed.sam_rounds"
PSEUDO_LABELS = "scribmed.pseudo_labels"
POSTPROCESSING = "scribmed.postprocessing"
PREDICTIONS = "scribmed.predictions"

#: the version each kind is written in today
CURRENT_VERSIONS: dict[str, int] = {
    CHECKPOINT: 3, HISTORY: 2, SAM_DECODER: 2, RUN: 2, FOLD: 2, SAM_ROUNDS: 2, PSEUDO_LABELS: 2,
    POSTPROCESSING: 1, PREDICTIONS: 1,
}


def schema_id(kind: str, version: Optional[int] = None) -> str:
    """``"<kind>/<version>"`` (default: the current version), e.g. ``"scribmed.run/2"``."""
    if kind not in CURRENT_VERSIONS:
        raise ValueError(f"unknown record kind {kind!r}; known: {sorted(CURRENT_VERSIONS)}")
    return f"{kind}/{CURRENT_VERSIONS[kind] if version is None else int(version)}"


def parse_schema(value: Any) -> Optional[tuple[str, int]]:
    """``(kind, version)`` of a schema identifier, ``None`` when it is not one (``"kind/N"``, N >= 1)."""
    if not isinstance(value, str) or "/" not in value:
        return None
    kind, _, version = value.rpartition("/")
    if not kind or not version.isdigit() or int(version) < 1:
        return None
    return kind, int(version)


def stamp(kind: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with ``"schema"`` set to the current version of ``kind`` (as its first key)."""
    return {SCHEMA_KEY: schema_id(kind), **{k: v for k, v in record.items() if k != SCHEMA_KEY}}
