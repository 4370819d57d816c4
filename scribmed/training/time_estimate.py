"""How long a run will train, measured on its first iterations, and a guard against days on a CPU.

:class:`TrainingTimeEstimate` times a few iterations after a warm-up one, reports the estimated
training time of the run (iterations left x seconds per iteration; validation comes on top) and,
on a CPU, stops a run that would train longer than ``max_cpu_hours`` with one line giving the
estimate and the ways on: fewer iterations, a GPU, or a higher limit (``0``: none). A new user's
``scribmed cv`` at the paper's 60,000 iterations thus stops within a minute instead of running for
days.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Optional

from ignite.engine import Engine, Events

from scribmed.runtime import distributed as dist_utils

__all__ = ["TrainingTimeEstimate", "TrainingTooLong", "format_duration"]

logger = logging.getLogger(__name__)

#: iterations timed after the warm-up iteration
PROBE_ITERATIONS = 3


class TrainingTooLong(ValueError):
    """The run would train longer than the limit allows on this device (one line: the estimate and the way on)."""


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"3.5 h"``, ``"9.2 days"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class TrainingTimeEstimate:
    """Estimate a run's training time from its first iterations; on a CPU refuse one over the limit.

    Args:
        max_cpu_hours: the longest training a CPU run may start (hours); ``None`` or ``<= 0``: no limit.
            Runs on CUDA are never stopped.
        report: print the estimate (to stderr, on rank 0).
        options: how the error names the two settings to change, ``(iterations, limit)``: the
            ``scribmed cv`` flags by default; a MONAI bundle passes its keys
            (``("--iterations", "--max_cpu_hours")``).
    """

    def __init__(self, max_cpu_hours: Optional[float] = 4.0, report: bool = True,
                 options: tuple[str, str] = ("--iterations", "--max-cpu-hours")) -> None:
        self.max_cpu_hours = None if max_cpu_hours is None or max_cpu_hours <= 0 else float(max_cpu_hours)
        self.report = bool(report)
        self.options = options
        self.seconds_per_iteration: Optional[float] = None
        self.estimate_seconds: Optional[float] = None
        self._first: Optional[int] = None
        self._t0 = 0.0

    def attach(self, engine: Engine) -> "TrainingTimeEstimate":
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        return self

    def _started(self, engine: Any) -> None:
        self._first = int(engine.state.iteration)

    def _iteration(self, engine: Any) -> None:
        if self._first is None or self.estimate_seconds is not None:
            return
        done = int(engine.state.iteration) - self._first
        if done == 1:  # the warm-up iteration (allocations, first kernels) is not timed
            self._t0 = time.perf_counter()
            return
        left = int(engine.total_iterations) - int(engine.state.iteration)
        if done < 1 + PROBE_ITERATIONS and left > 0:
            return
        timed = done - 1
        if timed < 1:
            return
        self.seconds_per_iteration = (time.perf_counter() - self._t0) / timed
        self.estimate_seconds = self.seconds_per_iteration * (left + timed)
        total = self.seconds_per_iteration * int(engine.total_iterations)
        what = (f"{engine.total_iterations} iterations at {self.seconds_per_iteration:.2f} s each on "
                f"{engine.state.device}")
        if self.report and dist_utils.is_main_process():
            print(f"{getattr(engine, 'recipe', '') or 'training'}: about {format_duration(total)} of training "
                  f"({what}; validation on top)", file=sys.stderr, flush=True)
        on_cpu = str(engine.state.device).startswith("cpu")
        if on_cpu and self.max_cpu_hours is not None and self.estimate_seconds > self.max_cpu_hours * 3600:
            raise TrainingTooLong(
                f"this run would train for about {format_duration(total)} on the CPU ({what}), over the "
                f"{self.max_cpu_hours:g} h limit: use fewer {self.options[0]}, a GPU, or {self.options[1]} 0 to go on")
