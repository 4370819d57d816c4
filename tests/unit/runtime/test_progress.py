"""Progress output: a tqdm bar in a terminal, plain timed lines (no carriage return) elsewhere.

The lines mode runs on a fake clock and writes to an ``io.StringIO`` (not a terminal), so no test
sleeps.
"""

from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from scribmed.runtime.progress import (
    PROGRESS_ENV,
    PROGRESS_INTERVAL_ENV,
    ProgressLines,
    progress_bar,
    progress_interval,
    progress_mode,
)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.delenv(PROGRESS_INTERVAL_ENV, raising=False)


def _lines(stream: io.StringIO) -> list[str]:
    text = stream.getvalue()
    assert "\r" not in text
    assert text == "" or text.endswith("\n")
    return text.splitlines()


def test_lines_respect_the_interval_and_end_with_a_final_line():
    out, clock = io.StringIO(), FakeClock()
    bar = ProgressLines(total=5000, desc="train fold 1", unit="iterations", file=out, interval=30, clock=clock)
    for _ in range(1000):  # 1000 iterations over 250 s: a line each time 30 s have passed
        clock.now += 0.25
        bar.update(1)
    assert len(_lines(out)) == 8  # at 30, 60, ..., 240 s
    bar.set_postfix(loss=0.41)
    clock.now += 19
    bar.update(0)
    assert len(_lines(out)) == 8  # 29 s after the last line: none yet
    clock.now += 1
    bar.update(0)
    assert _lines(out)[-1] == "train fold 1: 1000/5000 iterations (20%), 0:04:30 elapsed, ~0:18:00 left, loss=0.41"
    bar.update(4000)
    bar.close()
    bar.close()  # once only
    assert len(_lines(out)) == 10
    assert _lines(out)[-1] == "train fold 1: 5000/5000 iterations (100%), 0:04:30 elapsed, loss=0.41"


def test_lines_iterate_and_print_the_final_line_of_a_short_loop():
    out = io.StringIO()
    items = list(progress_bar(range(5), desc="evaluate", unit="case", file=out))
    assert items == [0, 1, 2, 3, 4]
    assert _lines(out) == ["evaluate: 5/5 case (100%), 0:00:00 elapsed"]


def test_zero_interval_writes_a_line_per_update():
    out = io.StringIO()
    with ProgressLines(total=3, unit="job", file=out, interval=0) as bar:
        for _ in range(3):
            bar.update(1)
    assert _lines(out)[:3] == ["1/3 job (33%), 0:00:00 elapsed, ~0:00:00 left", "2/3 job (66%), 0:00:00 elapsed, "
                               "~0:00:00 left", "3/3 job (100%), 0:00:00 elapsed"]
    assert len(_lines(out)) == 4  # the context manager's close writes the end line


def test_postfix_values_and_an_unknown_total():
    out, clock = io.StringIO(), FakeClock()
    bar = ProgressLines(iter("abc"), desc="cases", unit="case", file=out, interval=30, clock=clock)
    bar.set_postfix({"val_dice": "0.8123"}, refresh=False, loss=1 / 3)
    clock.now += 65
    assert list(bar) == ["a", "b", "c"]
    assert _lines(out) == ["cases: 1 case, 0:01:05 elapsed, val_dice=0.8123, loss=0.3333",
                           "cases: 3 case, 0:01:05 elapsed, val_dice=0.8123, loss=0.3333"]


def test_resume_estimates_from_the_iterations_done_since_start():
    out, clock = io.StringIO(), FakeClock()
    bar = ProgressLines(total=100, initial=50, desc="DMPLS", file=out, interval=30, clock=clock)
    clock.now += 40
    bar.update(10)  # 10 items in 40 s since the resume: 40 left take 160 s
    assert _lines(out) == ["DMPLS: 60/100 it (60%), 0:00:40 elapsed, ~0:02:40 left"]


def test_leave_false_is_silent_unless_it_reported_before():
    out, clock = io.StringIO(), FakeClock()
    list(ProgressLines(range(3), desc="inner", leave=False, file=out, interval=30, clock=clock))
    assert _lines(out) == []
    bar = ProgressLines(total=2, desc="inner", leave=False, file=out, interval=30, clock=clock)
    clock.now += 31
    bar.update(1)
    bar.update(1)
    bar.close()
    assert len(_lines(out)) == 2 and _lines(out)[-1].startswith("inner: 2/2 it (100%)")


def test_disable_writes_nothing_and_passes_items_through(monkeypatch: pytest.MonkeyPatch):
    out = io.StringIO()
    assert list(progress_bar([1, 2], file=out, disable=True)) == [1, 2]
    bar = progress_bar(total=3, file=out, disable=True)
    bar.update(3)
    bar.set_postfix(loss="0.1")
    bar.close()
    monkeypatch.setenv(PROGRESS_ENV, "off")
    assert list(progress_bar([1, 2], file=Terminal())) == [1, 2]
    assert out.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar_and_a_log_gets_lines():
    term = Terminal()
    bar = progress_bar(total=4, desc="cv jobs", unit="job", initial=1, file=term)
    assert isinstance(bar, tqdm)
    assert bar.n == 1 and bar.total == 4
    bar.close()
    assert isinstance(progress_bar(total=4, file=io.StringIO()), ProgressLines)
    assert progress_mode(term) == "bar" and progress_mode(io.StringIO()) == "lines"


@pytest.mark.parametrize("value, kind", [("lines", ProgressLines), ("LINES", ProgressLines), ("bar", tqdm)])
def test_env_overrides_the_detection(monkeypatch: pytest.MonkeyPatch, value: str, kind: type):
    monkeypatch.setenv(PROGRESS_ENV, value)
    stream = Terminal() if kind is ProgressLines else io.StringIO()
    bar = progress_bar(total=2, file=stream)
    assert isinstance(bar, kind)
    bar.update(2)
    bar.close()
    if kind is ProgressLines:
        assert "\r" not in stream.getvalue()


def test_env_interval_and_bad_values(monkeypatch: pytest.MonkeyPatch):
    assert progress_interval() == 30
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0.5")
    assert progress_interval() == 0.5 and ProgressLines(total=1, file=io.StringIO()).interval == 0.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(PROGRESS_INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=PROGRESS_INTERVAL_ENV):
            progress_interval()
    monkeypatch.setenv(PROGRESS_ENV, "fancy")
    with pytest.raises(ValueError, match="bar, lines, off"):
        progress_mode(io.StringIO())
