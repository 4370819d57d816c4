"""A training dataset built when training starts, not when its workflow is initialised.

MONAI's tools (``ConfigWorkflow.initialize()``, ``check_properties()``, the model zoo's CI) expect a
bundle's ``initialize()`` to build objects cheaply. A scribmed training set is not cheap: SAM-SP's
pseudo labels come from SAM rounds over the fold's training patients, and the slice cache reads and
resizes every training volume. :class:`DeferredDataset` holds the recipe for building it and builds
it once, on :meth:`~DeferredDataset.materialize`: the trainer calls that when its engine starts
(:func:`materialize_on_start`), in the main process, before any DataLoader worker exists.

Building it leaves the global random states (torch, CUDA, numpy, Python) as they were, so a run
whose data was built late draws exactly what a run that built it first draws: SAM's decoder
fine-tuning consumes random numbers, and the network and its dropout stream must not notice.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["DeferredDataset", "materialize_on_start", "preserved_rng"]


class preserved_rng:
    """Context manager restoring torch's, CUDA's, numpy's and Python's global random states on exit."""

    def __enter__(self) -> "preserved_rng":
        self._torch = torch.random.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        self._numpy = np.random.get_state()
        self._python = random.getstate()
        return self

    def __exit__(self, *exc: object) -> None:
        torch.random.set_rng_state(self._torch)
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)
        np.random.set_state(self._numpy)
        random.setstate(self._python)


class DeferredDataset(Dataset):
    """A map-style dataset that ``build()`` makes on first use (see the module docstring).

    Args:
        build: returns the real dataset (e.g. a
            :class:`~scribmed.training.sampling.SliceTrainingDataset` over a slice cache).
        description: what it is, for ``repr`` and error messages.

    Attributes:
        built: whether :meth:`materialize` has run.
    """

    def __init__(self, build: Callable[[], Any], description: str = "training data") -> None:
        self._build = build
        self._dataset: Optional[Any] = None
        self.description = description

    @property
    def built(self) -> bool:
        return self._dataset is not None

    def materialize(self) -> Any:
        """Build the dataset (once; the global random states are left unchanged) and return it."""
        if self._dataset is None:
            with preserved_rng():
                self._dataset = self._build()
        return self._dataset

    def __len__(self) -> int:
        return len(self.materialize())

    def __getitem__(self, key: Any) -> Any:
        return self.materialize()[key]

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes this class lacks: the built dataset's (e.g. ``cache``)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.materialize(), name)

    def __getstate__(self) -> dict[str, Any]:
        # worker processes get the built dataset, never the recipe for building it
        return {"_build": None, "_dataset": self.materialize(), "description": self.description}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        state = "built" if self.built else "not built yet"
        return f"DeferredDataset({self.description}, {state})"


def materialize_on_start(engine: Any, dataset: Any) -> None:
    """Build ``dataset`` when ``engine`` starts (ignite ``Events.STARTED``), if it is deferred."""
    if isinstance(dataset, DeferredDataset):
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, lambda _: dataset.materialize())
