"""What a bundle builds at ``initialize()`` and runs on first use (MONAI's ``initialize()`` stays cheap).

:class:`call_once` wraps a stage (the SAM pseudo-label rounds, an instance inference bundle's
checkpoint loading) so that building the config runs nothing and the stage runs once, when first
called; :func:`deferred_slice_dataset` is a training set whose slice cache is built when training
starts (after that stage). The trainer factories of :mod:`scribmed.bundles.trainers` build it when
their engine starts.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

__all__ = ["call_once", "deferred_slice_dataset"]


class call_once:
    """``function(**kwargs)``, called on first use and remembered: a bundle's SAM stage.

    A config item ``{_target_: scribmed.bundles.deferred.call_once, function: ..., ...}`` builds this
    object at ``initialize()`` without running anything; the training set (when training starts)
    and ``--run_id pseudo_labels`` call it, and within one workflow the stage runs once.
    """

    def __init__(self, function: Callable[..., Any], **kwargs: Any) -> None:
        self.function = function
        self.kwargs = kwargs
        self._done = False
        self._result: Any = None

    def __call__(self) -> Any:
        if not self._done:
            self._result = self.function(**self.kwargs)
            self._done = True
        return self._result

    def __repr__(self) -> str:
        name = getattr(self.function, "__name__", repr(self.function))
        return f"call_once({name}, {'done' if self._done else 'not run yet'})"


def deferred_slice_dataset(
    cache: Callable[..., Any],
    stage: Optional[Callable[[], Any]] = None,
    stage_args: Sequence[str] = (),
    **dataset_kwargs: Any,
) -> Any:
    """A bundle's training set, built when training starts (:mod:`scribmed.training.deferred_dataset`).

    Args:
        cache: builds the slice cache (the config's ``train#cache`` with ``_mode_: callable``).
        stage: the step the cache needs first (the SAM stage, ``_mode_: callable``), or ``None``.
        stage_args: the cache's keyword argument(s) the stage's result fills: one name takes the
            whole result (SAM-SP: ``[pseudo]``), several take its items (mixsup: ``[pseudo, supervision]``).
        dataset_kwargs: :class:`~scribmed.training.sampling.SliceTrainingDataset`'s other arguments.

    Returns:
        A :class:`~scribmed.training.deferred_dataset.DeferredDataset`; the trainer factories of
        :mod:`scribmed.bundles.trainers` build it when their engine starts.
    """
    from scribmed.training.deferred_dataset import DeferredDataset
    from scribmed.training.sampling import SliceTrainingDataset

    names = list(stage_args)
    if stage is None and names:
        raise ValueError(f"stage_args {names} given without a stage")

    def build() -> Any:
        kwargs: dict[str, Any] = {}
        if stage is not None:
            result = stage()
            kwargs = {names[0]: result} if len(names) == 1 else {n: result[n] for n in names}
        return SliceTrainingDataset(cache(**kwargs), **dataset_kwargs)

    return DeferredDataset(build, "slice cache" + (" after the SAM stage" if stage is not None else ""))
