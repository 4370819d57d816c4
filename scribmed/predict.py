"""``scribmed predict``: apply a trained checkpoint to images without labels (nnU-Net's ``predict``).

The checkpoint names its recipe, config and class map, so nothing but the file is needed: the
recipe is rebuilt with :meth:`scribmed.recipes.base.Recipe.from_checkpoint`, every case of the
input folder (a plain folder of ``*.nii.gz`` images, or any layout) is predicted slice-wise and written as ``<out>/<case_id>.nii.gz`` on the case's own
grid (its spacing and affine). Outputs already present are kept, so a killed run resumes; the
input folder is never written to.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from scribmed.data.errors import DataError

__all__ = ["predict_folder"]


def predict_folder(
    checkpoint: str | Path,
    input_root: str | Path,
    layout: str = "generic",
    out_dir: str | Path = "predictions",
    device: str = "auto",
    spacing: Optional[Sequence[float]] = None,
    progress: bool = True,
) -> list[Path]:
    """Predict every case of ``input_root`` (read with ``layout``) with ``checkpoint``.

    With the ``generic`` layout (the default) ``input_root`` may be a plain folder of ``*.nii.gz``
    images (or nnU-Net's ``imagesTr/``, multi-channel ``_0000``/``_0001`` files included); the class
    map is the checkpoint's unless the folder's ``dataset.json`` names one.

    Returns:
        The written (or already present) prediction paths, in dataset order.

    Raises:
        DataError: an unreadable or foreign checkpoint, an input whose class map or channel
            count does not fit it, or an output folder inside the input folder.
    """
    from scribmed import recipes
    from scribmed.data.layouts import open_dataset
    from scribmed.runtime.checkpoint import load_checkpoint
    from scribmed.training.inference import predict_to_folder

    checkpoint, input_root, out_dir = Path(checkpoint), Path(input_root), Path(out_dir)
    name = load_checkpoint(checkpoint).get("recipe")
    if not isinstance(name, str) or name not in recipes.names():
        raise DataError(checkpoint, f"not a scribmed training checkpoint (recipe {name!r}; known: "
                        f"{', '.join(recipes.names())})")
    recipe, model, class_map = recipes.get(name).from_checkpoint(checkpoint)
    if hasattr(recipe.config, "device"):
        recipe.config = dataclasses.replace(recipe.config, device=device)
    options: dict = {"spacing": tuple(spacing)} if spacing is not None else {}
    if layout == "generic":
        from scribmed.data.case import ClassMap

        names = {int(k): v for k, v in class_map["names"].items()}
        ignore = class_map.get("ignore_index")
        options["fallback_class_map"] = ClassMap(names, len(names) if ignore is None else int(ignore))
    dataset = open_dataset(layout, input_root, **options)
    if {int(k): v for k, v in dataset.class_map.names.items()} != class_map["names"]:
        raise DataError(input_root, f"class map {dict(dataset.class_map.names)} of this {layout} dataset does not fit "
                        f"the checkpoint's {class_map['names']}")
    resolved_out, resolved_in = out_dir.resolve(), input_root.resolve()
    if resolved_out == resolved_in or resolved_in in resolved_out.parents:
        raise DataError(out_dir, "the output folder lies inside the input dataset; choose a folder outside it")
    from scribmed.crossval.fold_evaluation import evaluation_for

    dtype = evaluation_for(getattr(recipe, "task", "semantic")).prediction_dtype  # instance maps: int32
    paths: list[Path] = []
    for case, path, _ in predict_to_folder(list(dataset), lambda c: recipe.predict_case(model, c), out_dir,
                                           progress=progress, dtype=dtype):
        paths.append(path)
        case.release()
    recipe.release(model)
    return paths
