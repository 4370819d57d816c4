"""The contract every recipe implements, so the CV runner, the CLI and the demo need no list of methods.

A recipe is a trainable method with a config dataclass (defaults from its paper). It

* ``train``\\ s one fold on the fold's training cases, selecting on its validation cases (never the
  test cases), and returns a :class:`FoldModel` (the checkpoint used and how it was chosen);
* ``predict_case``\\ s one case with that model: a ``(slices, H, W)`` uint8 label map on the case's
  own grid;
* rebuilds itself and its model from a checkpoint it wrote (:meth:`Recipe.from_checkpoint`, for
  ``scribmed predict``).

Class attributes name it (``name``, ``title``), give its config class (``config_cls``) and the
CLI options it takes. :meth:`Recipe.from_options` builds it from option names (CLI flags or
``--set key=value``); options it does not know are an error naming the ones it does. Recipes may
add their own CLI flags with :meth:`Recipe.add_arguments`. Register a new one with
:func:`scribmed.recipes.register` (or the ``scribmed.recipes`` entry-point group); ``docs/recipes.md``
shows a complete minimal recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np

from scribmed.data.case import Case, ClassMap

__all__ = ["FoldModel", "NoConfig", "Recipe", "checkpoint_model", "read_recipe_checkpoint"]


@dataclass
class FoldModel:
    """What a recipe's training returns: the model used for the test cases and how it was chosen.

    Attributes:
        checkpoint: the checkpoint file (``None`` for a method that learns nothing).
        policy: ``"best"`` (by validation score), ``"last"`` or ``"none"`` (nothing to select).
        sha256: the checkpoint's checksum (recorded in ``fold.json``).
        extra: facts recorded in ``fold.json`` (classes, best validation Dice, iterations, ...).
    """

    checkpoint: Optional[Path]
    policy: str
    sha256: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    POLICIES: ClassVar[tuple[str, ...]] = ("best", "last", "none")

    def __post_init__(self) -> None:
        if self.policy not in self.POLICIES:
            raise ValueError(f"checkpoint policy must be one of {self.POLICIES}, got {self.policy!r}")


@dataclass
class NoConfig:
    """The config of a recipe without hyper-parameters."""

    def to_dict(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NoConfig":
        if data:
            raise ValueError(f"unknown options {sorted(data)}; this recipe takes none")
        return cls()


def _as_type_of(default: Any, value: Any, what: str) -> Any:
    """A ``--set`` / flag value as the type of the option's numeric ``default``.

    Numbers given as text become numbers, ``"true"``/``"false"`` become booleans where the default
    is one; a value that cannot be the default's number type is a one-line ``ValueError``. Other
    values pass unchanged (the config checks them; e.g. ``amp`` takes ``True`` or ``"bf16"``).
    """
    if isinstance(default, bool):
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        return value
    if isinstance(default, (int, float)) and not isinstance(value, bool):
        kind = type(default)
        if isinstance(value, (int, float)) and (kind is float or float(value).is_integer()):
            return kind(value)
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
        raise ValueError(f"{what}: {value!r} is not {'an integer' if kind is int else 'a number'} (default {default!r})")
    return value


class Recipe:
    """Base class of scribmed's recipes (see the module docstring for the contract).

    Attributes:
        name: registry name (``scribmed cv --recipe NAME``).
        title: how tables and reports name it.
        config_cls: its config dataclass (``to_dict`` / ``from_dict``; defaults from the paper).
        option_aliases: CLI option name -> config field, where they differ (e.g. ``val_interval``).
        volatile: config fields that do not change results (left out of ``run.json``).
        supervision_types: the training supervision it can learn from (a case stating another
            type, e.g. through ``scribmed cv --supervision``, is refused before training).
        task: ``"semantic"`` (label maps, judged by Dice / HD95 / ASD per class) or ``"instance"``
            (instance maps, judged by DSB score / F1 / AJI / PQ); the CV runner picks the
            evaluation by it (:mod:`scribmed.crossval.fold_evaluation`).
        prepare_stage: the name of the fold's stage that runs before training and can be its own
            job (``"sam"``: the SAM pseudo-label stage), or ``None`` when there is none; see
            :meth:`prepare_fold`.
        distributed: whether :meth:`train` runs under ``torchrun`` with DistributedDataParallel
            (every rank calls it; only rank 0 writes).
    """

    name: ClassVar[str] = "recipe"
    title: ClassVar[str] = ""
    config_cls: ClassVar[type] = NoConfig
    option_aliases: ClassVar[Mapping[str, str]] = {}
    volatile: ClassVar[tuple[str, ...]] = ()
    supervision_types: ClassVar[tuple[str, ...]] = ("scribble",)
    task: ClassVar[str] = "semantic"
    prepare_stage: ClassVar[Optional[str]] = None
    distributed: ClassVar[bool] = False

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.config_cls()

    # -- construction --------------------------------------------------------------------

    @classmethod
    def option_names(cls) -> set[str]:
        """Every option :meth:`from_options` accepts (config fields and their CLI aliases)."""
        fields = {f.name for f in dataclasses.fields(cls.config_cls)} if dataclasses.is_dataclass(cls.config_cls) else set()
        return fields | set(cls.option_aliases)

    @classmethod
    def from_options(cls, **options: Any) -> "Recipe":
        """The recipe with its paper defaults overridden by ``options`` (``None`` values are ignored).

        Raises:
            ValueError: an option this recipe does not take (the message lists the valid ones).
        """
        given = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(given) - cls.option_names())
        if unknown:
            valid = ", ".join(sorted(cls.option_names())) or "none"
            raise ValueError(f"recipe {cls.name!r} does not take {', '.join(unknown)} (its options: {valid})")
        fields = {cls.option_aliases.get(k, k): v for k, v in given.items()}
        defaults = cls.config_cls().to_dict()
        for key, value in fields.items():
            fields[key] = _as_type_of(defaults.get(key), value, f"recipe {cls.name!r} option {key}")
        try:
            return cls(cls.config_cls.from_dict({**defaults, **fields}))
        except TypeError as exc:  # a value of the wrong kind the config itself did not name
            raise ValueError(f"recipe {cls.name!r}: an option has a value of the wrong type ({exc})") from None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> list[str]:
        """Add this recipe's CLI flags to ``parser`` (``scribmed cv``); return their ``dest`` names.

        The default declares the shared flag (:data:`scribmed.recipes.options.SHARED_FLAGS`) of each
        option this recipe takes (``iterations`` → ``--iterations``, ...); a recipe with flags of
        its own extends the list. ``--set key=value`` reaches :meth:`from_options` without a flag.
        """
        from scribmed.recipes.options import add_shared_flags

        config = cls.config_cls().to_dict() if hasattr(cls.config_cls, "to_dict") else {}
        defaults = {n: config[cls.option_aliases.get(n, n)] for n in cls.option_names()
                    if cls.option_aliases.get(n, n) in config}
        return add_shared_flags(parser, cls.option_names(), defaults)

    # -- the contract --------------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        """The result-affecting config, stored in ``run.json`` (a rerun with other settings is refused)."""
        d = dict(self.config.to_dict())
        for key in self.volatile:
            d.pop(key, None)
        return d

    def check_supervision(self, train: Sequence[Case]) -> None:
        """Refuse training cases whose stated supervision this recipe cannot use.

        Raises:
            DataError: naming the first cases and their types.
        """
        from scribmed.data.errors import DataError

        bad = [c for c in train if c.supervision is not None and c.supervision not in self.supervision_types]
        if bad:
            shown = ", ".join(f"{c.case_id} ({c.supervision})" for c in bad[:5])
            raise DataError(bad[0].source, f"recipe {self.name!r} trains on {', '.join(self.supervision_types)} "
                            f"supervision only; {len(bad)} training case(s) state another: {shown}")

    def check_device(self) -> None:
        """Refuse, before any case is loaded, a device or precision this machine cannot run.

        Called where the folds train (the CV runner's process). Default: the config's ``device``
        and ``amp`` (when it has them) through :func:`~scribmed.runtime.device.amp_policy`, e.g.
        ``--amp bf16`` on a CPU without native bfloat16.

        Raises:
            ValueError: one line naming the option and the problem.
        """
        from scribmed.runtime.device import amp_policy, resolve_device

        device, amp = getattr(self.config, "device", None), getattr(self.config, "amp", None)
        if device is not None and amp is not None:
            amp_policy(resolve_device(device), amp)

    def prepare_run(self, out: Path) -> None:
        """Called once by the CV runner with the run directory before any fold (default: nothing).

        E.g. SAM-SP points its embedding cache at ``out/sam_embeddings`` so every fold shares it.
        """

    def prepare_fold(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> None:
        """Run the fold's :attr:`prepare_stage` (e.g. SAM pseudo labels) into ``out_dir``, resumably.

        Called with :meth:`train`'s arguments by ``scribmed cv --stage prepare`` (its own job on a
        cluster) and, under ``torchrun``, by rank 0 before every rank trains. :meth:`train` must
        still work without it: it finds the stage's outputs and skips what is finished. The
        default (no stage) does nothing.
        """

    def train(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> FoldModel:
        """Train on ``train``, select on ``val`` (never the test cases), write into ``out_dir``."""
        raise NotImplementedError(f"{type(self).__name__}.train")

    def predict_case(self, model: FoldModel, case: Case) -> np.ndarray:
        """``(slices, H, W)`` uint8 label map of ``case`` on its own grid (an int32 instance map,
        0 = background, for ``task = "instance"``)."""
        raise NotImplementedError(f"{type(self).__name__}.predict_case")

    def predict_probabilities(self, model: FoldModel, case: Case, mirror: bool = False) -> Any:
        """``(slices, classes, h, w)`` float32 class probabilities of ``case`` at the model's input size,
        averaged over mirrored copies when ``mirror``: what ``scribmed predict --run`` averages over the
        folds of a run (:func:`scribmed.training.inference.labels_from_probabilities` turns them into
        the label map). A recipe without class probabilities refuses in one line."""
        raise ValueError(f"recipe {self.name!r} predicts label maps only: a fold ensemble and test-time mirroring "
                         "need class probabilities (predict with --checkpoint)")

    @classmethod
    def from_checkpoint(cls, checkpoint: Path) -> tuple["Recipe", FoldModel, dict[str, Any]]:
        """``(recipe with the checkpoint's config, its model, the checkpoint's class map)`` (``scribmed predict``).

        The class map is ``{"names": {index: name}, "ignore_index": int}``.
        """
        raise NotImplementedError(f"recipe {cls.name!r} has no checkpoints to load")

    def release(self, model: FoldModel) -> None:
        """Free what predicting kept in memory (e.g. the network) after a fold."""


def read_recipe_checkpoint(checkpoint: Path, name: str) -> dict[str, Any]:
    """Load a training checkpoint (``weights_only``) and check that recipe ``name`` wrote it.

    Raises:
        DataError: unreadable, or written by another recipe.
    """
    from scribmed.data.errors import DataError
    from scribmed.runtime.checkpoint import load_checkpoint

    ckpt = load_checkpoint(Path(checkpoint))
    if ckpt.get("recipe") != name:
        raise DataError(checkpoint, f"not a {name} checkpoint (recipe {ckpt.get('recipe')!r})")
    return ckpt


def checkpoint_model(checkpoint: Path, ckpt: Mapping[str, Any]) -> tuple[FoldModel, dict[str, Any]]:
    """``(FoldModel of the file, its class map {"names": {index: name}, "ignore_index": int})``.

    Raises:
        DataError: the checkpoint records no class map.
    """
    from scribmed.data.errors import DataError
    from scribmed.runtime.files import file_sha256

    class_map = ckpt.get("class_map") or {}
    names = {int(k): v for k, v in (class_map.get("names") or {}).items()}
    if not names:
        raise DataError(checkpoint, "checkpoint records no class map")
    model = FoldModel(Path(checkpoint), "last", file_sha256(checkpoint), {"num_classes": len(names)})
    return model, {"names": names, "ignore_index": class_map.get("ignore_index")}
