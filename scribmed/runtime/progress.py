"""Progress output of every loop in scribmed: a tqdm bar in a terminal, plain lines in a log.

A tqdm bar redraws itself with carriage returns, which fills a log file (Slurm, CI, ``| tee``,
nohup) with thousands of frames. :func:`progress_bar` therefore shows a tqdm bar only when its
stream is a terminal (or in a Jupyter kernel); otherwise it writes a plain, newline-terminated
line at most every ``$SCRIBMED_PROGRESS_INTERVAL`` seconds (default 30) and one at the end, e.g.
``DMPLS: 1200/6000 it (20%), 0:04:10 elapsed, ~0:16:40 left, loss=0.4100``.

``$SCRIBMED_PROGRESS`` (``bar``, ``lines`` or ``off``) overrides the detection. Standard library
only; tqdm is imported for a bar alone (without tqdm a bar falls back to lines).
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, TextIO

__all__ = [
    "PROGRESS_ENV",
    "PROGRESS_INTERVAL_ENV",
    "PROGRESS_MODES",
    "Progress",
    "ProgressLines",
    "progress_bar",
    "progress_interval",
    "progress_mode",
]

#: Environment variable overriding the output: ``bar``, ``lines`` or ``off``.
PROGRESS_ENV = "SCRIBMED_PROGRESS"
#: Environment variable with the seconds between two progress lines (default 30).
PROGRESS_INTERVAL_ENV = "SCRIBMED_PROGRESS_INTERVAL"
#: The values of ``$SCRIBMED_PROGRESS``.
PROGRESS_MODES = ("bar", "lines", "off")
_DEFAULT_INTERVAL = 30.0


class Progress(Protocol):
    """What the loops use of a progress object (a tqdm bar and :class:`ProgressLines` both have it)."""

    n: int
    total: Optional[int]

    def __iter__(self) -> Iterator[Any]: ...

    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> Any: ...


def progress_mode(file: Optional[TextIO] = None) -> str:
    """``bar``, ``lines`` or ``off``: ``$SCRIBMED_PROGRESS`` when set, else ``bar`` for a terminal
    (or a Jupyter kernel, whose widget bar needs no carriage returns) and ``lines`` otherwise.

    Raises:
        ValueError: ``$SCRIBMED_PROGRESS`` is set to something else.
    """
    value = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if value:
        if value not in PROGRESS_MODES:
            raise ValueError(f"{PROGRESS_ENV} must be one of {', '.join(PROGRESS_MODES)}, got {value!r}")
        return value
    stream = sys.stderr if file is None else file
    isatty = getattr(stream, "isatty", None)
    try:
        terminal = bool(isatty()) if isatty is not None else False
    except (OSError, ValueError):  # a closed or detached stream
        terminal = False
    return "bar" if terminal or "ipykernel" in sys.modules else "lines"


def progress_interval() -> float:
    """Seconds between two progress lines: ``$SCRIBMED_PROGRESS_INTERVAL``, default 30.

    Raises:
        ValueError: the variable is not a number >= 0.
    """
    value = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    if not value:
        return _DEFAULT_INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise ValueError(f"{PROGRESS_INTERVAL_ENV} must be a number of seconds >= 0, got {value!r}")
    return seconds


def _clock_text(seconds: float) -> str:
    """``H:MM:SS`` of whole seconds."""
    return str(datetime.timedelta(seconds=int(max(seconds, 0.0))))


def _value_text(value: Any) -> str:
    """A postfix value as tqdm shows it: strings as they are, floats with four significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class ProgressLines:
    """Progress as plain lines: at most one every ``interval`` seconds while it runs, one at the end.

    Counts like tqdm (``n`` from ``initial``, ``update(k)``, ``total``); the time left is estimated
    from the items done since it started, so a resumed run (``initial > 0``) is estimated
    correctly. ``leave=False`` (a transient inner loop) writes its end line only when it wrote a
    line before, so short inner loops stay silent as a vanishing bar does. ``disable`` writes
    nothing. No line has a carriage return.
    """

    def __init__(
        self,
        iterable: Optional[Iterable[Any]] = None,
        total: Optional[int] = None,
        desc: str = "",
        unit: str = "it",
        leave: bool = True,
        initial: int = 0,
        disable: bool = False,
        *,
        file: Optional[TextIO] = None,
        interval: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.total = None if total is None else int(total)
        self.desc, self.unit, self.leave, self.disable = desc, unit, leave, disable
        self.n = self.initial = int(initial)
        self.postfix: dict[str, str] = {}
        self.file = file
        self.interval = progress_interval() if interval is None else float(interval)
        self._clock = clock
        self._start = self._last = clock()
        self._lines = 0
        self._closed = False

    def __len__(self) -> int:
        if self.total is not None:
            return self.total
        return len(self.iterable)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("ProgressLines was made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "ProgressLines":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items; write a line when ``interval`` seconds passed since the last one."""
        self.n += int(n)
        if self.disable or self._closed:
            return
        now = self._clock()
        if now - self._last >= self.interval:
            self._write(now)

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        """Values shown at the end of the next lines (``refresh`` is accepted for tqdm's sake)."""
        values = dict(ordered_dict or {}, **kwargs)
        self.postfix = {str(k): _value_text(v) for k, v in values.items()}

    def close(self) -> None:
        """Write the end line (see the class) once."""
        if self._closed:
            return
        self._closed = True
        if not self.disable and (self.leave or self._lines):
            self._write(self._clock())

    def line(self, now: Optional[float] = None) -> str:
        """The progress line at time ``now`` (default: the clock's now)."""
        now = self._clock() if now is None else now
        elapsed = now - self._start
        head = f"{self.desc}: " if self.desc else ""
        parts: list[str] = []
        if self.total:
            parts.append(f"{head}{self.n}/{self.total} {self.unit} ({100 * self.n // self.total}%)")
        else:
            parts.append(f"{head}{self.n} {self.unit}")
        parts.append(f"{_clock_text(elapsed)} elapsed")
        done = self.n - self.initial
        if self.total and 0 < done and self.n < self.total:
            parts.append(f"~{_clock_text(elapsed / done * (self.total - self.n))} left")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        return ", ".join(parts)

    def _write(self, now: float) -> None:
        stream = sys.stderr if self.file is None else self.file
        stream.write(self.line(now) + "\n")
        stream.flush()
        self._last = now
        self._lines += 1


def progress_bar(
    iterable: Optional[Iterable[Any]] = None,
    total: Optional[int] = None,
    desc: str = "",
    unit: str = "it",
    leave: bool = True,
    initial: int = 0,
    disable: bool = False,
    *,
    file: Optional[TextIO] = None,
) -> Progress:
    """Progress over ``iterable`` (iterate the result) or over ``total`` items (call ``update``).

    A tqdm bar (``tqdm.auto``) where :func:`progress_mode` says ``bar``; :class:`ProgressLines`
    for ``lines``, and a silent :class:`ProgressLines` for ``off`` or ``disable`` (non-zero DDP
    ranks, ``progress=False``). ``file`` is the stream written to (default ``sys.stderr``).

    Raises:
        ValueError: ``$SCRIBMED_PROGRESS`` or ``$SCRIBMED_PROGRESS_INTERVAL`` is not valid.
    """
    mode = "off" if disable else progress_mode(file)
    if mode == "bar":
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm missing: lines instead
            mode = "lines"
        else:
            return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, initial=initial,
                        file=file, dynamic_ncols=True)
    return ProgressLines(iterable, total=total, desc=desc, unit=unit, leave=leave, initial=initial,
                         disable=mode == "off", file=file)
