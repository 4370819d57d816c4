"""``scribmed predict``: apply a trained checkpoint to images without labels (nnU-Net's ``predict``).

The checkpoint names its recipe, config and class map, so nothing but the file is needed: the
recipe is rebuilt with :meth:`scribmed.recipes.base.Recipe.from_checkpoint`, every case of the
input folder (a plain folder of ``*.nii.gz`` images, or any layout) is predicted slice-wise and written as ``<out>/<case_id>.nii.gz`` on the case's own
grid (its spacing and affine), or, for DICOM series (layout ``dicom``), as one DICOM-SEG
``<out>/<case_id>.dcm`` referencing the series (``output_format="dicom-seg"``).
:func:`predict_run` predicts with the ensemble of a cross-validation run's folds instead; either can average over mirrored copies of each slice.
Outputs already present are kept, so a killed run resumes; ``<out>/predictions.json`` records the
models (sha256) and settings the folder's files were made with, and a rerun with other ones is
refused instead of mixing two kinds of prediction. The input folder is never written to.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from scribmed.data.errors import DataError

__all__ = ["FORMATS", "PredictOptions", "predict_folder", "predict_run"]

#: Output formats: ``nifti`` writes ``<case_id>.nii.gz`` label maps, ``dicom-seg`` one DICOM
#: Segmentation ``<case_id>.dcm`` per series (needs the ``dicom`` layout, whose source files it references).
FORMATS = ("nifti", "dicom-seg")


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """How ``scribmed predict`` reads its input, predicts and writes (the command's flags).

    Attributes:
        layout: how the input folder is read (``generic``: a plain folder of ``*.nii.gz`` images or
            nnU-Net's ``imagesTr/``; ``dicom``: DICOM series; or any dataset layout).
        out_dir: output folder (never inside the input folder).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``.
        spacing: ``(dz, dy, dx)`` in mm for layouts that store none.
        progress: progress bar over cases.
        mirror: average the class probabilities over each slice's flips along H, W and both (four
            passes per slice and model, :data:`scribmed.training.inference.MIRROR_AXES`).
        output_format: one of :data:`FORMATS`.
        postprocess: with :func:`predict_run`, apply the run's ``postprocessing.json``.
    """

    layout: str = "generic"
    out_dir: Path = Path("predictions")
    device: str = "auto"
    spacing: Optional[tuple[float, ...]] = None
    progress: bool = True
    mirror: bool = False
    output_format: str = "nifti"
    postprocess: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        if self.output_format not in FORMATS:
            raise DataError(None, f"unknown output format {self.output_format!r}; known: {', '.join(FORMATS)}")
        if self.output_format == "dicom-seg" and self.layout != "dicom":
            raise DataError(None, "--format dicom-seg needs DICOM series as input (--layout dicom), not --layout "
                            f"{self.layout}")


def predict_folder(checkpoint: str | Path, input_root: str | Path,
                   options: PredictOptions = PredictOptions()) -> list[Path]:
    """Predict every case of ``input_root`` with ``checkpoint``.

    With the ``generic`` layout (the default) ``input_root`` may be a plain folder of ``*.nii.gz``
    images (or nnU-Net's ``imagesTr/``, multi-channel ``_0000``/``_0001`` files included); the class
    map is the checkpoint's unless the folder's ``dataset.json`` names one (``dicom``: always the
    checkpoint's).

    Returns:
        The written (or already present) prediction paths, in dataset order.

    Raises:
        DataError: an unreadable or foreign checkpoint, an input whose class map or channel
            count does not fit it, an output folder inside the input folder, or ``dicom-seg``
            without the ``dicom`` layout (when the options are made, before any model is loaded).
    """
    recipe, model, class_map = _load(Path(checkpoint), options.device)
    return _predict([(recipe, model, Path(checkpoint))], class_map, Path(input_root), options)


def predict_run(run_dir: str | Path, input_root: str | Path, options: PredictOptions = PredictOptions(),
                folds: Optional[Sequence[int]] = None) -> list[Path]:
    """Predict every case of ``input_root`` with the ensemble of a cross-validation run's folds.

    Each finished fold (or each of ``folds``, 1-based) contributes its selected checkpoint (the one
    its ``fold.json`` names); the class probabilities of the folds (and of the mirrored copies when
    ``options.mirror``) are averaged at the network's input size, then the argmax is resized to each
    case's grid, as nnU-Net ensembles its folds. When the run holds ``postprocessing.json``
    (``scribmed cv postprocess``) and ``options.postprocess`` is true, its keep-largest-component
    plan is applied to each case's label map on the case's grid before it is written (said once on
    stderr).

    Raises:
        DataError: no finished fold, a requested fold that is not finished, folds of different
            recipes, class maps or input sizes, and everything :func:`predict_folder` refuses.
        ValueError: a recipe that predicts label maps only (no probabilities to average).
    """
    from scribmed.crossval.runner import finished_folds, read_fold_record

    run_dir = Path(run_dir)
    done = finished_folds(run_dir)
    chosen = list(done) if folds is None else [int(k) for k in folds]
    missing = [k for k in chosen if k not in done]
    if not chosen or missing:
        raise DataError(run_dir, f"folds {missing or chosen} are not finished (finished: {done or 'none'})")
    models, class_map, size = [], None, None
    for k in chosen:
        record = read_fold_record(run_dir / f"fold_{k}")
        if not record.get("checkpoint"):
            raise DataError(run_dir / f"fold_{k}", f"fold {k} keeps no model checkpoint (a recipe that learns "
                            "nothing, such as nearest): nothing to predict with")
        checkpoint = run_dir / f"fold_{k}" / record["checkpoint"]
        recipe, model, fold_map = _load(checkpoint, options.device)
        fold_size = getattr(recipe.config, "size", None)
        if class_map is not None and (fold_map != class_map or fold_size != size or recipe.name != models[0][0].name):
            raise DataError(run_dir / f"fold_{k}", f"fold {k} ({recipe.name}, class map {fold_map['names']}, size "
                            f"{fold_size}) does not fit fold {chosen[0]} ({models[0][0].name}, {class_map['names']}, "
                            f"{size}): folds of one run only")
        models.append((recipe, model, checkpoint))
        class_map, size = fold_map, fold_size
    plan = _postprocessing(run_dir, class_map) if options.postprocess else None
    return _predict(models, class_map, Path(input_root), options, plan)


def _postprocessing(run_dir: Path, class_map: dict) -> Any:
    """The run's post-processing plan (None: none recorded, or it changes nothing), said once on stderr."""
    from scribmed.crossval.postprocessing_record import POSTPROCESSING_RECORD, read_postprocessing_plan

    plan = read_postprocessing_plan(run_dir)
    if plan is None or plan.is_empty:
        return None
    names = {int(k): v for k, v in class_map["names"].items()}
    if not set(plan.foreground) <= set(names) - {0}:
        raise DataError(run_dir / POSTPROCESSING_RECORD, f"post-processing of classes {list(plan.foreground)} does "
                        f"not fit the folds' class map {names}")
    print(f"post-processing ({run_dir / POSTPROCESSING_RECORD}): {plan.describe(names)}", file=sys.stderr)
    return plan


def _dicom_seg_writer(recipe: str, class_names: dict[int, str]) -> Any:
    """``write(path, case, labels)`` for :func:`~scribmed.training.inference.predict_to_folder`: one DICOM-SEG."""
    from importlib.metadata import PackageNotFoundError, version

    from scribmed.data.dicom_seg import write_dicom_seg

    try:
        software = version("scribmed")
    except PackageNotFoundError:
        software = "unknown"
    return lambda path, case, labels: write_dicom_seg(path, labels, class_names, case.source_files, recipe=recipe,
                                                      version=software)


PREDICTIONS_RECORD = "predictions.json"


def _claim_output(out_dir: Path, models: list[tuple[Any, Any, Path]], options: PredictOptions, plan: Any) -> None:
    """Write ``out_dir/predictions.json`` (the models and settings of its files), or, when the folder
    already holds one, check it was made the same way: a rerun resumes only what it would write
    itself; predictions of other models or settings are refused in one line, not mixed in."""
    import json

    from scribmed.runtime.files import atomic_write_text, file_sha256
    from scribmed.runtime.migrations import read_json_record, upgrade_predictions_record
    from scribmed.runtime.records import PREDICTIONS, stamp

    made = {"models": [file_sha256(path) for _, _, path in models], "mirror": options.mirror,
            "postprocessing": None if plan is None else json.loads(json.dumps(dataclasses.asdict(plan))),
            "format": options.output_format}
    record = out_dir / PREDICTIONS_RECORD
    if record.exists():
        earlier = read_json_record(record, upgrade_predictions_record)
        changed = [key for key, value in made.items() if earlier.get(key) != value]
        if changed:
            raise DataError(out_dir, f"holds predictions made with other {', '.join(changed)} ({PREDICTIONS_RECORD}): "
                            "choose another --out, or delete the folder to predict again")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, json.dumps(stamp(PREDICTIONS, {
        **made, "checkpoints": [str(path.resolve()) for _, _, path in models],
        "recipe": models[0][0].name}), indent=2) + "\n")


def _load(checkpoint: Path, device: str) -> tuple[Any, Any, dict]:
    """The recipe, model and class map of a training checkpoint, the recipe set to ``device``."""
    from scribmed import recipes
    from scribmed.runtime.checkpoint import load_checkpoint

    name = load_checkpoint(checkpoint).get("recipe")
    if not isinstance(name, str) or name not in recipes.names():
        raise DataError(checkpoint, f"not a scribmed training checkpoint (recipe {name!r}; known: "
                        f"{', '.join(recipes.names())})")
    recipe, model, class_map = recipes.get(name).from_checkpoint(checkpoint)
    if hasattr(recipe.config, "device"):
        recipe.config = dataclasses.replace(recipe.config, device=device)
    return recipe, model, class_map


def _predict(
    models: list[tuple[Any, Any, Path]],
    class_map: dict,
    input_root: Path,
    options: PredictOptions,
    plan: Any = None,
) -> list[Path]:
    """Open the input, check it against the models' class map, predict and write every case
    (post-processed by ``plan``, a :class:`~scribmed.crossval.postprocessing.PostprocessingPlan`, if given).

    ``models``: ``(recipe, model, checkpoint path)`` of each model of the ensemble."""
    from scribmed.data.layouts import open_dataset
    from scribmed.recipes.base import Recipe

    first = models[0][0]
    layout, out_dir, mirror, output_format = options.layout, options.out_dir, options.mirror, options.output_format
    averaged = len(models) > 1 or mirror
    if averaged and (getattr(first, "task", "semantic") != "semantic"
                     or type(first).predict_probabilities is Recipe.predict_probabilities):
        raise ValueError(f"recipe {first.name!r} predicts label maps only: a fold ensemble and test-time mirroring "
                         "average class probabilities (predict one fold with --checkpoint, without --tta)")
    from scribmed.training.inference import ensemble_labels, predict_to_folder

    layout_options: dict = {"spacing": options.spacing} if options.spacing is not None else {}
    if layout in ("generic", "dicom"):
        from scribmed.data.case import ClassMap

        names = {int(k): v for k, v in class_map["names"].items()}
        ignore = class_map.get("ignore_index")
        layout_options["fallback_class_map"] = ClassMap(names, len(names) if ignore is None else int(ignore))
    dataset = open_dataset(layout, input_root, **layout_options)
    if {int(k): v for k, v in dataset.class_map.names.items()} != class_map["names"]:
        raise DataError(input_root, f"class map {dict(dataset.class_map.names)} of this {layout} dataset does not fit "
                        f"the checkpoint's {class_map['names']}")
    resolved_out, resolved_in = out_dir.resolve(), input_root.resolve()
    if resolved_out == resolved_in or resolved_in in resolved_out.parents:
        raise DataError(out_dir, "the output folder lies inside the input dataset; choose a folder outside it")
    _claim_output(out_dir, models, options, plan)
    from scribmed.crossval.fold_evaluation import evaluation_for

    dtype = evaluation_for(getattr(first, "task", "semantic")).prediction_dtype  # instance maps: int32

    def labels(case: Any) -> Any:
        if not averaged:
            return first.predict_case(models[0][1], case)  # one model: its own prediction path
        return ensemble_labels((recipe.predict_probabilities(model, case, mirror) for recipe, model, _ in models),
                               case.image.shape[-2:])

    def predict(case: Any) -> Any:
        return labels(case) if plan is None else plan.apply(labels(case))

    if output_format == "dicom-seg" and getattr(first, "task", "semantic") != "semantic":
        raise ValueError(f"recipe {first.name!r} predicts instance maps; DICOM-SEG output holds class segments only")
    written = {"suffix": ".dcm", "write": _dicom_seg_writer(first.name, class_map["names"])} \
        if output_format == "dicom-seg" else {}
    paths: list[Path] = []
    for case, path, _ in predict_to_folder(list(dataset), predict, out_dir, progress=options.progress, dtype=dtype,
                                             **written):
        paths.append(path)
        case.release()
    for recipe, model, _ in models:
        recipe.release(model)
    return paths
