"""Run bookkeeping of a training run: checkpoints, history, training curve, resume.

:class:`RunRecorder` keeps ``best.pt`` (highest validation score, ties keep the earlier) and
``last.pt``, ``checkpoints.json``, a ``history.json`` and a training-curve PNG in the run folder,
all written atomically by rank 0. :func:`run_or_resume` runs a trainer to its budget, refusing or
resuming an earlier run in the same folder (bit-identical on CPU). Semantic and instance recipes
share it: the validation score is the evaluator's key metric (``val_mean_dice`` of
:class:`~scribmed.training.validation.VolumeDiceEvaluator`, ``val_dsb_score`` of
:class:`~scribmed.training.validation.InstanceScoreEvaluator`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol

import torch
from ignite.engine import Events
from monai.utils.enums import CommonKeys as Keys

from scribmed.data.case import ClassMap
from scribmed.data.errors import DataError
from scribmed.runtime import distributed as dist_utils
from scribmed.runtime.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from scribmed.runtime.records import CHECKPOINT, HISTORY, SCHEMA_KEY, schema_id, stamp
from scribmed.training.trainer import SegmentorTrainer
from scribmed.training.training_curve import plot_training_curve, read_history
from scribmed.runtime.files import atomic_write_text, file_sha256
from scribmed.runtime.progress import progress_bar

__all__ = ["BEST_NAME", "CHECKSUMS_NAME", "CURVE_NAME", "HISTORY_NAME", "LAST_NAME", "RecordedConfig", "RunRecorder",
           "check_resumable", "run_or_resume"]

logger = logging.getLogger(__name__)

LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
HISTORY_NAME = "history.json"
CURVE_NAME = "training_curve.png"
CHECKSUMS_NAME = "checkpoints.json"


class RecordedConfig(Protocol):
    """A run's configuration as the recorder stores it and a resumed run must match it."""

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def result_fields(cls) -> tuple[str, ...]: ...


class RunRecorder:
    """Epoch-end bookkeeping of a training run (attached by the trainer's assembly).

    At every engine epoch end (and at the final iteration): validate (rank 0), update the best
    metric (strictly greater wins, so ties keep the earlier checkpoint), write ``last.pt`` and,
    when improved, ``best.pt``, append to ``history.json``; all ranks contribute their RNG state.

    Args:
        trainer: the trainer.
        evaluator: validation engine or ``None`` (then no ``best.pt``); its ``metric_key`` (the
            key metric) and ``metric_label`` name the score.
        out_dir: run folder.
        config: the run's configuration (stored in checkpoints and history; its
            ``result_fields()`` must match on resume).
        class_map: stored in checkpoints and history.
        progress: progress bar over iterations on rank 0.
        record: further identity of the run a resumed run must match (e.g. S4M's teacher stage
            and its labelled images), stored in the checkpoints.
    """

    def __init__(
        self,
        trainer: SegmentorTrainer,
        evaluator: Any,
        out_dir: Path,
        config: RecordedConfig,
        class_map: ClassMap,
        progress: bool = True,
        record: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.trainer = trainer
        self.evaluator = evaluator
        self.out_dir = Path(out_dir)
        self.config = config
        self.class_map = class_map
        self.progress = progress
        self.record = json.loads(json.dumps(dict(record or {}), default=str))
        self.metric_key: str = getattr(evaluator, "metric_key", "val_mean_dice")
        self.best_metric: Optional[float] = None
        self.best_iteration: Optional[int] = None
        self.history: dict[str, Any] = stamp(HISTORY, {
            "recipe": trainer.recipe,
            "loss_terms": list(trainer.loss_terms),
            "validation": {"metric": self.metric_key, "label": getattr(evaluator, "metric_label", self.metric_key)},
            "config": config.to_dict(),
            "class_map": {"names": class_map.to_json(), "ignore_index": class_map.ignore_index},
            "resumed_from": [],
            "epochs": [],
        })
        self.checksums: dict[str, str] = {}
        self.last_saved_iteration = -1
        self._bar: Any = None
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._epoch_start = time.perf_counter()
        trainer.add_event_handler(Events.STARTED, self._on_started)
        trainer.add_event_handler(Events.EPOCH_STARTED, self._reset_epoch)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self.end_of_epoch)
        trainer.add_event_handler(Events.COMPLETED, self._on_completed)

    @property
    def is_main(self) -> bool:
        return dist_utils.is_main_process()

    @property
    def last_path(self) -> Path:
        return self.out_dir / LAST_NAME

    @property
    def best_path(self) -> Path:
        return self.out_dir / BEST_NAME

    @property
    def history_path(self) -> Path:
        return self.out_dir / HISTORY_NAME

    @property
    def curve_path(self) -> Path:
        return self.out_dir / CURVE_NAME

    # -- handlers ----------------------------------------------------------------------------

    def _on_started(self, engine: SegmentorTrainer) -> None:
        self.last_saved_iteration = max(self.last_saved_iteration, engine.state.iteration)
        if self.progress and self.is_main and self._bar is None:
            self._bar = progress_bar(
                total=engine.total_iterations, initial=engine.state.iteration, desc=engine.recipe.upper(), unit="it"
            )

    def _reset_epoch(self, engine: SegmentorTrainer) -> None:
        self._sums = {}
        self._counts = {}
        self._epoch_start = time.perf_counter()

    def _accumulate(self, engine: SegmentorTrainer) -> None:
        out = engine.state.output
        for key in (Keys.LOSS, *engine.loss_terms):
            if out.get(key) is None:  # a term this batch had no pixels for
                continue
            value = torch.as_tensor(out[key]).detach().float()
            self._sums[key] = self._sums[key] + value if key in self._sums else value.clone()
            self._counts[key] = self._counts.get(key, 0) + 1
        if self._bar is not None:
            self._bar.update(1)
            if engine.state.iteration % 10 == 0 or engine.state.iteration == engine.total_iterations:
                self._bar.set_postfix(loss=f"{float(out[Keys.LOSS]):.4f}", refresh=False)

    def _on_completed(self, engine: SegmentorTrainer) -> None:
        if engine.state.iteration != self.last_saved_iteration:
            self.end_of_epoch(engine)
        if self.is_main:
            plot_training_curve(self.history, self.curve_path)
        self.close()

    def close(self) -> None:
        """Close the progress bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def end_of_epoch(self, engine: SegmentorTrainer) -> None:
        """Validate, update best, write checkpoints and history (all ranks must call it)."""
        iteration = int(engine.state.iteration)
        if iteration == self.last_saved_iteration:
            return
        means = {k: float(v) / self._counts[k] for k, v in self._sums.items()}
        if Keys.LOSS in means and not math.isfinite(means[Keys.LOSS]):
            raise FloatingPointError(
                f"{engine.recipe} training diverged: mean loss {means[Keys.LOSS]} in the iterations up to {iteration}"
            )
        rng = capture_rng_state()
        rng_all = [rng]
        if dist_utils.is_distributed():
            rng_all = [None] * dist_utils.get_world_size()
            torch.distributed.all_gather_object(rng_all, rng)
        if self.is_main:
            val, per_class = None, {}
            if self.evaluator is not None:
                self.evaluator.run(global_epoch=engine.state.epoch)
                val = float(self.evaluator.state.metrics[self.metric_key])
                details = getattr(getattr(self.evaluator, "metric", None), "per_class", None)
                per_class = dict(details) if isinstance(details, Mapping) else {}
            improved = val is not None and (self.best_metric is None or val > self.best_metric)
            if improved:
                self.best_metric, self.best_iteration = val, iteration
            payload = stamp(CHECKPOINT, {
                "recipe": engine.recipe,
                **engine.training_state(),
                "rng": rng_all,
                "config": self.config.to_dict(),
                "class_map": {"names": self.class_map.to_json(), "ignore_index": self.class_map.ignore_index},
                "record": self.record,
                self.metric_key: val,
                "best": {"metric": self.best_metric, "iteration": self.best_iteration},
            })
            self.checksums["last"] = save_checkpoint(self.last_path, payload)
            if improved:
                self.checksums["best"] = save_checkpoint(self.best_path, payload)
            self._write_checksums(iteration)
            self.history["loss_terms"] = list(engine.loss_terms)
            self.history["epochs"].append(
                {
                    "epoch": int(engine.state.epoch),
                    "iteration": iteration,
                    "lr": float(engine.optimizer.param_groups[0]["lr"]),
                    "loss": means.get(Keys.LOSS),
                    **{term: means.get(term) for term in engine.loss_terms},
                    self.metric_key: val,
                    **({"val_dice": per_class} if per_class else {}),
                    "best_metric": self.best_metric,
                    "best_iteration": self.best_iteration,
                    "seconds": round(time.perf_counter() - self._epoch_start, 3),
                }
            )
            self.history["best"] = {"metric": self.best_metric, "iteration": self.best_iteration}
            atomic_write_text(self.history_path, json.dumps(self.history, indent=1))
            if self._bar is not None and val is not None:
                self._bar.set_postfix(loss=f"{means.get(Keys.LOSS, float('nan')):.4f}", val_dice=f"{val:.4f}")
        self.last_saved_iteration = iteration
        dist_utils.barrier()

    def _write_checksums(self, iteration: int) -> None:
        data = {
            name: {"path": str(self.out_dir / (LAST_NAME if name == "last" else BEST_NAME)), "sha256": digest}
            for name, digest in self.checksums.items()
        }
        data["last"]["iteration"] = iteration
        if "best" in data:
            data["best"]["iteration"] = self.best_iteration
        atomic_write_text(self.out_dir / CHECKSUMS_NAME, json.dumps(data, indent=1))

    # -- resume ------------------------------------------------------------------------------

    def restore(self, ckpt: Mapping[str, Any], path: Path) -> None:
        """Resume from a checkpoint: trainer state, RNG of this rank, best metric, history."""
        self.trainer.load_training_state(ckpt)
        rng_all = ckpt.get("rng")
        rank = dist_utils.get_rank()
        if rng_all:  # None: a run whose draws all derive from (seed, iteration) (see runtime.migrations)
            if len(rng_all) != dist_utils.get_world_size():
                logger.warning(
                    "%s was written by %d process(es), resuming with %d: RNG streams differ from an uninterrupted run",
                    path, len(rng_all), dist_utils.get_world_size(),
                )
            restore_rng_state(rng_all[rank] if rank < len(rng_all) else rng_all[0])
        best = ckpt.get("best") or {}
        self.best_metric = best.get("metric")
        self.best_iteration = best.get("iteration")
        iteration = int(ckpt["trainer"]["iteration"])
        self.last_saved_iteration = iteration
        digest = file_sha256(path)
        self.checksums["last"] = digest
        if self.best_path.is_file():
            self.checksums["best"] = file_sha256(self.best_path)
        if self.history_path.is_file():
            try:
                old = read_history(self.history_path)
                self.history["epochs"] = [e for e in old.get("epochs", []) if e.get("iteration", 0) <= iteration]
                self.history["resumed_from"] = list(old.get("resumed_from", []))
            except (OSError, ValueError, DataError):
                logger.warning("%s is unreadable; starting a new history", self.history_path)
        self.history["resumed_from"].append({"checkpoint": str(path), "sha256": digest, "iteration": iteration})


def check_resumable(
    ckpt: Mapping[str, Any], path: Path, config: RecordedConfig, class_map: ClassMap,
    record: Optional[Mapping[str, Any]] = None,
) -> None:
    """Raise ``DataError`` unless ``ckpt`` was written with the same result-affecting config,
    class map and further identity ``record`` (e.g. S4M's teacher stage)."""
    stored = ckpt.get("config") or {}
    current = config.to_dict()
    diff = [f"{k}: {stored.get(k)!r} -> {current[k]!r}" for k in config.result_fields() if stored.get(k) != current[k]]
    if diff:
        raise DataError(path, "cannot resume, the configuration changed (" + "; ".join(diff) + ")")
    if (ckpt.get("record") or {}) != json.loads(json.dumps(dict(record or {}), default=str)):
        raise DataError(path, "cannot resume, written by another configuration of this recipe "
                        f"({ckpt.get('record')} vs {dict(record or {})}); use a new output folder")
    cm = ckpt.get("class_map") or {}
    if cm.get("names") != class_map.to_json() or cm.get("ignore_index") != class_map.ignore_index:
        raise DataError(path, f"cannot resume, the class map changed ({cm} vs {class_map.to_json()})")


def run_or_resume(recorder: "RunRecorder", resume: bool) -> None:
    """Run a trainer to its budget in ``recorder.out_dir``, refusing or resuming an earlier run there.

    An existing ``last.pt`` is an error unless ``resume``; when resuming, the checkpoint must come
    from the same result-affecting configuration and class map, and network, optimizer, loss
    generator, engine counters, RNG states and best metric are restored. A finished run is not
    trained again. Shared by :func:`train_dmpls` and the bundles' training workflow.

    Raises:
        DataError: the folder holds a run and ``resume`` is False; an incompatible checkpoint.
    """
    last = recorder.last_path
    if last.exists():
        if not resume:
            raise DataError(
                recorder.out_dir,
                "already holds a training run (last.pt); resume it or use another output folder",
            )
        ckpt = load_checkpoint(last)
        recipe = recorder.trainer.recipe
        if ckpt.get("recipe") != recipe or ckpt.get(SCHEMA_KEY) != schema_id(CHECKPOINT):
            raise DataError(last, f"not a scribmed {recipe} training checkpoint (found {ckpt.get('recipe')!r})")
        check_resumable(ckpt, last, recorder.config, recorder.class_map, recorder.record)
        recorder.restore(ckpt, last)
    elif resume:
        logger.info("no %s to resume from; starting a new run", last)
    if dist_utils.is_main_process():
        recorder.out_dir.mkdir(parents=True, exist_ok=True)
    trainer = recorder.trainer
    try:
        if trainer.state.iteration < trainer.total_iterations:
            trainer.run()
        elif dist_utils.is_main_process() and not recorder.curve_path.exists():
            plot_training_curve(recorder.history, recorder.curve_path)
    finally:
        recorder.close()
    dist_utils.barrier()


