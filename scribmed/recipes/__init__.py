"""Recipes: one module per method, each a :class:`~scribmed.recipes.base.Recipe` composing shared parts.

* ``dmpls`` (:mod:`scribmed.recipes.dmpls.recipe`) — dual-branch U-Net, dynamically mixed pseudo labels.
* ``samsp`` (:mod:`scribmed.recipes.samsp.recipe`) — SAM pseudo-label rounds, then the aligned segmentor.
* ``mixsup`` (:mod:`scribmed.recipes.mixsup.recipe`) — SAM pseudo labels from any weak label, SeSAM objective.
* ``nearest`` (:mod:`scribmed.recipes.nearest.recipe`) — nearest-scribble baseline (no learning).

Instance recipes (``task = "instance"``: instance maps, judged by DSB score / F1 / AJI / PQ):

* ``contour_unet`` (:mod:`scribmed.recipes.instance_segmentor`) — the contour U-Net on simulated
  weak labels without SAM (``weak=full``: the ceiling; ``weak=point``: the points-only floor).
* ``sesam`` (:mod:`scribmed.recipes.sesam.recipe`) — SAM pseudo labels from instance-prior prompts + EMA teacher.
* ``s4m`` (:mod:`scribmed.recipes.s4m.recipe`) — semi-supervised: teacher → SAM refinement → ARP → student with
  structural distillation.
* ``wish`` (:mod:`scribmed.recipes.wish.recipe`) — tags / points / boxes with the min-over-3 SAM mask cost.

The registry maps names to classes: :func:`get`, :func:`names`, :func:`register`. Built-in
recipes are imported on first use (importing this package pulls in no network code). Packages
outside scribmed register theirs with :func:`register` or under the ``scribmed.recipes``
entry-point group (``name = "package.module:RecipeClass"``). The CV runner, the CLI and the demo
only ever look recipes up here.
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
    "contour_unet": "scribmed.recipes.instance_segmentor:InstanceSegmentorRecipe",
    "sesam": "scribmed.recipes.sesam.recipe:SeSAMRecipe",
    "s4m": "scribmed.recipes.s4m.recipe:S4MRecipe",
    "wish": "scribmed.recipes.wish.recipe:WISHRecipe",
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
