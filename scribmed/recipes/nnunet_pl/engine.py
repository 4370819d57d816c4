"""Driving nnU-Net v2 through its own API: plan and preprocess, train (resumably), predict.

Everything nnU-Net does runs with its three folders pointed at the fold's own
:class:`~scribmed.recipes.nnunet_pl.raw_dataset.NNUNetFolders` (the variables are set for the
duration of each call and restored after), so runs never share or leak state, and the user sets
nothing. The training loop is nnU-Net's ``nnUNetTrainer`` unchanged apart from its budget
(epochs, iterations per epoch) and checkpoint interval; resuming loads nnU-Net's own
``checkpoint_latest.pth`` exactly as ``nnUNetv2_train --c`` does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, TextIO

import numpy as np
import torch

from scribmed.recipes.nnunet_pl.config import NNUNetPLConfig
from scribmed.recipes.nnunet_pl.raw_dataset import DATASET_ID, NNUNetFolders
from scribmed.runtime.files import atomic_write_text

__all__ = ["CpuBudget", "NNUNET_MISSING", "TRAINER", "nnunet_environment", "plan_and_preprocess", "predictor_from_record",
           "predict_array", "require_nnunet", "train_fold", "trained_model_record", "trainer_folder"]

NNUNET_MISSING = "recipe 'nnunet_pl' needs nnU-Net v2: pip install 'scribmed[nnunet]' (the nnunetv2 package)"
#: nnU-Net's trainer class this recipe runs (the paper's: nnU-Net unchanged)
TRAINER = "nnUNetTrainer"
_PREPROCESSED = "scribmed_preprocessed.json"


def require_nnunet() -> None:
    """Raise a one-line ``ValueError`` saying what to install when nnU-Net v2 is missing."""
    import importlib.util

    if importlib.util.find_spec("nnunetv2") is None:
        raise ValueError(NNUNET_MISSING)


def _workers(config: NNUNetPLConfig) -> int:
    return max(0, (os.cpu_count() or 1) - 1) if config.num_workers < 0 else int(config.num_workers)


@contextlib.contextmanager
def nnunet_environment(folders: NNUNetFolders, workers: int, log: Optional[TextIO] = None) -> Iterator[None]:
    """nnU-Net's folder and worker variables set while the block runs, then restored.

    ``workers``: data-augmentation processes (``nnUNet_n_proc_DA``; nnU-Net's planner also sizes
    its thread count by it, so planning passes at least 1). ``log``: where nnU-Net's prints go
    (``None``: this process's stdout). matplotlib's ``rcParams`` are restored too: nnU-Net's
    progress plot calls ``seaborn.set(font_scale=2.5)``, which would enlarge every figure this
    process draws afterwards (fold box plots, training curves) until their labels leave the canvas.
    """
    import matplotlib

    values = {**folders.environment(), "nnUNet_n_proc_DA": str(int(workers)), "nnUNet_compile": "false"}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        with matplotlib.rc_context(), \
                contextlib.redirect_stdout(log) if log is not None else contextlib.nullcontext():
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _quiet_import() -> None:
    """Import nnU-Net once, keeping its start-up notices (unset folders, planner advice) off the console."""
    with contextlib.redirect_stdout(io.StringIO()):
        import nnunetv2.experiment_planning.plan_and_preprocess_api  # noqa: F401
        import nnunetv2.inference.predict_from_raw_data  # noqa: F401
        import nnunetv2.training.nnUNetTrainer.nnUNetTrainer  # noqa: F401


def _planner_class(name: str) -> type:
    from batchgenerators.utilities.file_and_folder_operations import join
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    cls = recursive_find_python_class(join(nnunetv2.__path__[0], "experiment_planning"), name,
                                      current_module="nnunetv2.experiment_planning")
    if cls is None:
        raise ValueError(f"nnunet_pl planner {name!r} is not an nnU-Net experiment planner")
    return cls


def plan_and_preprocess(folders: NNUNetFolders, config: NNUNetPLConfig, log: Optional[TextIO] = None) -> dict[str, Any]:
    """Fingerprint, plan and preprocess the fold's raw dataset with nnU-Net's API (skipped when done).

    Returns:
        the plans (nnU-Net's ``<plans>.json``).

    Raises:
        ValueError: the planner made no ``config.configuration`` for this data (``3d_fullres`` of
            2D images).
    """
    require_nnunet()
    _quiet_import()
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiment_dataset,
        preprocess_dataset,
    )

    marker = folders.preprocessed_dataset / _PREPROCESSED
    workers = max(1, _workers(config))
    state = json.loads(marker.read_text()) if marker.exists() else {}
    if state.get("configuration") == config.configuration and state.get("planner") == config.planner:
        return json.loads((folders.preprocessed_dataset / f"{state['plans']}.json").read_text())
    with nnunet_environment(folders, workers, log):
        # integrity (label values, shapes, geometry) was checked when the fold was written
        extract_fingerprints([DATASET_ID], num_processes=workers, check_dataset_integrity=False, clean=True,
                             verbose=False, show_progress_bar=False)
        plans, identifier = plan_experiment_dataset(DATASET_ID, _planner_class(config.planner))
        if config.configuration not in plans["configurations"]:
            raise ValueError(f"nnU-Net planned no {config.configuration!r} configuration for these cases "
                             f"(planned: {', '.join(plans['configurations'])}); use configuration 2d")
        preprocess_dataset(DATASET_ID, identifier, (config.configuration,), (workers,), verbose=False,
                           show_progress_bar=False)
    atomic_write_text(marker, json.dumps({"configuration": config.configuration, "planner": config.planner,
                                          "plans": identifier}) + "\n")
    return json.loads((folders.preprocessed_dataset / f"{identifier}.json").read_text())


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def trainer_folder(folders: NNUNetFolders, config: NNUNetPLConfig, identifier: str) -> Path:
    """nnU-Net's output folder of the fold (``results/<dataset>/<trainer>__<plans>__<configuration>/fold_0``)."""
    return folders.results / folders.raw_dataset.name / f"{TRAINER}__{identifier}__{config.configuration}" / "fold_0"


def train_fold(folders: NNUNetFolders, config: NNUNetPLConfig, plans: Mapping[str, Any],
               log: Optional[TextIO] = None) -> Path:
    """Train nnU-Net fold 0 of the preprocessed dataset, or resume it; return its output folder.

    A finished fold (``checkpoint_final.pth``) is not trained again. Otherwise training continues
    from ``checkpoint_latest.pth`` (or ``checkpoint_best.pth``) when present, as ``--c`` does, with
    the configured budget.
    """
    require_nnunet()
    _quiet_import()
    from nnunetv2.run.run_training import maybe_load_checkpoint
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from scribmed.runtime.device import resolve_device

    identifier = plans["plans_name"]
    out = trainer_folder(folders, config, identifier)
    if (out / "checkpoint_final.pth").exists():
        return out
    resume = any((out / f"checkpoint_{k}.pth").exists() for k in ("latest", "best"))
    dataset_json = json.loads((folders.preprocessed_dataset / "dataset.json").read_text())
    with nnunet_environment(folders, _workers(config), log):
        _seed(config.seed)
        trainer = nnUNetTrainer(plans={**plans, "continue_training": resume}, configuration=config.configuration,
                                fold=0, dataset_json=dataset_json, device=resolve_device(config.device))
        trainer.num_epochs = int(config.epochs)
        trainer.num_iterations_per_epoch = int(config.iterations_per_epoch)
        trainer.num_val_iterations_per_epoch = int(config.val_iterations_per_epoch)
        trainer.save_every = int(config.save_every)
        maybe_load_checkpoint(trainer, resume, False, None)
        device = resolve_device(config.device)
        left = (int(config.epochs) - int(trainer.current_epoch)) * int(config.iterations_per_epoch)
        trainer.train_step = CpuBudget(config, left, device.type == "cpu", log).wrap(trainer.train_step)
        try:
            trainer.run_training()
        except BaseException:
            for loader in (trainer.dataloader_train, trainer.dataloader_val):  # nnU-Net's augmentation workers
                if hasattr(loader, "_finish"):
                    loader._finish()
            raise
    return out


class CpuBudget:
    """Times a fold's first nnU-Net iterations and, on a CPU, stops a fold estimated over ``max_cpu_hours``.

    Wraps the trainer's ``train_step`` (nnU-Net's training itself is unchanged): one warm-up
    iteration, then :data:`~scribmed.training.time_estimate.PROBE_ITERATIONS` timed ones give the
    seconds per iteration; the estimate (iterations left x that; validation on top) goes to the
    log, and on a CPU one over the limit raises
    :class:`~scribmed.training.time_estimate.TrainingTooLong` naming the flags to change.
    """

    def __init__(self, config: NNUNetPLConfig, iterations_left: int, on_cpu: bool, log: Optional[TextIO]) -> None:
        self.limit = float(config.max_cpu_hours) if on_cpu and config.max_cpu_hours > 0 else None
        self.left, self.log, self.calls, self.t0 = int(iterations_left), log, 0, 0.0
        self.seconds_per_iteration: Optional[float] = None

    def wrap(self, step: Any) -> Any:
        import time

        from scribmed.training.time_estimate import PROBE_ITERATIONS, TrainingTooLong, format_duration

        def timed(batch: Any) -> Any:
            out = step(batch)
            self.calls += 1
            if self.calls == 1:
                self.t0 = time.perf_counter()
            elif self.calls == 1 + PROBE_ITERATIONS and self.seconds_per_iteration is None:
                self.seconds_per_iteration = (time.perf_counter() - self.t0) / PROBE_ITERATIONS
                total = self.seconds_per_iteration * self.left
                what = f"{self.left} iterations at {self.seconds_per_iteration:.1f} s each"
                print(f"nnunet_pl: about {format_duration(total)} of training ({what}; validation on top)",
                      file=self.log or sys.stdout, flush=True)
                if self.limit is not None and total > self.limit * 3600:
                    raise TrainingTooLong(
                        f"this nnU-Net fold would train for about {format_duration(total)} on the CPU ({what}), over "
                        f"the {self.limit:g} h limit: use fewer --epochs or --iterations-per-epoch, a GPU, or "
                        "--max-cpu-hours 0 to go on")
            return out

        return timed


def trained_model_record(out: Path, config: NNUNetPLConfig, plans: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen nnU-Net checkpoint as plain data: weights, plans, ``dataset.json``, mirroring axes.

    Only tensors, numbers, strings, lists and dicts, so a scribmed checkpoint holding it loads
    with ``weights_only=True`` and predicts without nnU-Net's folders.
    """
    name = f"checkpoint_{config.checkpoint}.pth"
    ckpt = torch.load(Path(out) / name, map_location="cpu", weights_only=False)
    dataset_json = json.loads((Path(out).parent / "dataset.json").read_text())
    axes = ckpt.get("inference_allowed_mirroring_axes")
    return {
        "network": ckpt["network_weights"],
        "nnunet": {
            "trainer": ckpt.get("trainer_name", TRAINER),
            "configuration": config.configuration,
            "plans": json.loads(json.dumps(dict(plans))),
            "dataset_json": dataset_json,
            "mirror_axes": None if axes is None else [int(a) for a in axes],
            "checkpoint": name,
            "epochs_trained": int(ckpt.get("current_epoch", 0)),
            "best_ema_pseudo_dice": None if ckpt.get("_best_ema") is None else float(ckpt["_best_ema"]),
        },
    }


def predictor_from_record(record: Mapping[str, Any], config: NNUNetPLConfig, mirror: bool) -> Any:
    """An ``nnUNetPredictor`` holding the network of a :func:`trained_model_record` (nnU-Net's inference)."""
    require_nnunet()
    _quiet_import()
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from scribmed.runtime.device import resolve_device

    info = record["nnunet"]
    plans_manager = PlansManager(dict(info["plans"]))
    configuration = plans_manager.get_configuration(info["configuration"])
    dataset_json = dict(info["dataset_json"])
    channels = determine_num_input_channels(plans_manager, configuration, dataset_json)
    heads = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    network = nnUNetTrainer.build_network_architecture(plans_manager, configuration, channels, heads,
                                                       enable_deep_supervision=False)
    network.load_state_dict(record["network"])
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net's notice that CPUs predict off-device
        predictor = nnUNetPredictor(tile_step_size=float(config.tile_step_size), use_gaussian=True,
                                    use_mirroring=bool(mirror), device=resolve_device(config.device),
                                    verbose=False, allow_tqdm=False)
    axes = info.get("mirror_axes")
    predictor.manual_initialization(network, plans_manager, configuration, [record["network"]], dataset_json,
                                    info.get("trainer", TRAINER), None if axes is None else tuple(axes))
    return predictor


def predict_array(predictor: Any, image: np.ndarray, spacing: Optional[tuple[float, ...]],
                  probabilities: bool = False) -> Any:
    """nnU-Net's prediction of one ``(slices, H, W)`` (or ``(slices, C, H, W)``) image on its own grid.

    Returns:
        ``(slices, H, W)`` label map, or with ``probabilities`` ``(labels, probabilities)`` where
        probabilities are ``(slices, classes, H, W)`` float32.
    """
    image = np.asarray(image, dtype=np.float32)
    data = image[None] if image.ndim == 3 else image.transpose(1, 0, 2, 3)
    spacing = tuple(float(s) for s in (spacing or (1.0, 1.0, 1.0)))
    if len(spacing) == 2:
        spacing = (1.0, *spacing)
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net's per-case notices
        out = predictor.predict_single_npy_array(np.ascontiguousarray(data), {"spacing": list(spacing)}, None, None,
                                                 probabilities)
    if not probabilities:
        return np.asarray(out)
    labels, probs = out
    return np.asarray(labels), np.ascontiguousarray(np.asarray(probs, dtype=np.float32).transpose(1, 0, 2, 3))
