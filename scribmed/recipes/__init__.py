"""Recipes: one package per method, each a :class:`~scribmed.recipes.base.Recipe` composing shared parts.

A recipe package ``scribmed/recipes/<name>/`` holds the method's config dataclass, its training
hook (a :class:`~scribmed.training.trainer.SegmentorTrainer` subclass overriding
``compute_loss``, or the instance loop's objective), its :class:`Recipe` class, and what its
bundles call; its bundle is ``bundles/<name>_<dataset>/``.

* ``dmpls`` — dual-branch U-Net, dynamically mixed pseudo labels.
* ``samsp`` — SAM pseudo-label rounds, then the aligned segmentor.
* ``mixsup`` — SAM pseudo labels from any weak label, SeSAM objective.
* ``nearest`` — nearest-scribble baseline (no learning).
* ``nnunet_pl`` — nnU-Net v2 with its ignore label on the scribbles (partial loss; ``scribmed[nnunet]``).

Instance recipes (``task = "instance"``: instance maps, judged by DSB score / F1 / AJI / PQ), on
the shared base :mod:`scribmed.recipes.instance_segmentor`:

* ``contour_unet`` — the contour U-Net on simulated weak labels without SAM (``weak=full``: the
  ceiling; ``weak=point``: the points-only floor).
* ``sesam`` — SAM pseudo labels from instance-prior prompts + EMA teacher.
* ``s4m`` — semi-supervised: teacher → SAM refinement → ARP → student with structural distillation.
* ``wish`` — tags / points / boxes with the min-over-3 SAM mask cost.

Shared modules: ``base`` (the contract, :class:`FoldModel`), ``segmentor`` (recipes whose model
is one 2D network), ``instance_segmentor``, ``options`` (CLI flags shared by config fields).

The registry maps names to classes: :func:`get`, :func:`names`, :func:`register`. Built-in
recipes are imported on first use (importing this package pulls in no network code). Packages
outside scribmed register theirs with :func:`register` or under the ``scribmed.recipes``
entry-point group (``name = "package.module:RecipeClass"``). The CV runner, the CLI and the
bundles only ever look recipes up here.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Union

from scribmed.recipes.base import FoldModel, NoConfig, Recipe

__all__ = ["FoldModel", "NoConfig", "Recipe", "build", "get", "names", "register"]

_REGISTRY: dict[str, Union[str, type[Recipe]]] = {
    "dmpls": "scribmed.recipes.dmpls.recipe:DMPLSRecipe",
    "samsp": "scribmed.recipes.samsp.recipe:SAMSPRecipe",
    "nearest": "scribmed.recipes.nearest.recipe:NearestScribbleRecipe",
    "mixsup": "scribmed.recipes.mixsup.recipe:MixSupRecipe",
    "contour_unet": "scribmed.recipes.contour_unet.recipe:ContourUNetRecipe",
    "sesam": "scribmed.recipes.sesam.recipe:SeSAMRecipe",
    "s4m": "scribmed.recipes.s4m.recipe:S4MRecipe",
    "wish": "scribmed.recipes.wish.recipe:WISHRecipe",
    "nnunet_pl": "scribmed.recipes.nnunet_pl.recipe:NNUNetPLRecipe",
}
_ENTRY_POINTS_LOADED = False


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in metadata.entry_points(group="scribmed.recipes"):
        _REGISTRY.setdefault(ep.name, ep.value)


def register(recipe: type[Recipe], name: str | None = None) -> type[Recipe]:
    """Make ``recipe`` available as ``name`` (default ``recipe.name``); usable as a class decorator.

    Raises:
        ValueError: the name is taken by another class.
    """
    key = name or recipe.name
    current = _REGISTRY.get(key)
    if current is not None and current is not recipe and not (isinstance(current, str) and current == _path(recipe)):
        raise ValueError(f"recipe name {key!r} is already registered ({current})")
    _REGISTRY[key] = recipe
    return recipe


def _path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def names() -> list[str]:
    """Registered recipe names, sorted."""
    _load_entry_points()
    return sorted(_REGISTRY)


def get(name: str) -> type[Recipe]:
    """The recipe class registered as ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    _load_entry_points()
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(names())}")
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = entry
    return entry


def build(name: str, **options: object) -> Recipe:
    """``get(name).from_options(**options)``: a recipe by name with its defaults overridden."""
    return get(name).from_options(**options)
