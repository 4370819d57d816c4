"""The training-time estimate from a run's first iterations, and the CPU limit it enforces."""

from __future__ import annotations

import time

import pytest
from ignite.engine import Engine, Events

from scribmed.training.time_estimate import TrainingTimeEstimate, TrainingTooLong, format_duration


def engine(device: str, total: int, seconds: float = 0.01) -> Engine:
    e = Engine(lambda eng, batch: time.sleep(seconds))
    e.total_iterations = total
    e.recipe = "test"
    e.add_event_handler(Events.STARTED, lambda eng: setattr(eng.state, "device", device))
    return e


def test_a_cpu_run_over_the_limit_stops_after_the_probe(capsys):
    est = TrainingTimeEstimate(max_cpu_hours=0.01).attach(e := engine("cpu", 100_000))
    with pytest.raises(TrainingTooLong, match=r"about .* on the CPU \(100000 iterations at 0\.0\d s each on cpu\), "
                                              r"over the 0\.01 h limit: use fewer --iterations, a GPU, or "
                                              r"--max-cpu-hours 0 to go on"):
        e.run(range(100), max_epochs=1)
    assert e.state.iteration == 4 and 0.005 < est.seconds_per_iteration < 0.1  # one warm-up + three timed
    assert "test: about" in capsys.readouterr().err


@pytest.mark.parametrize("device, limit", [("cuda:0", 0.01), ("cpu", None), ("cpu", 0.0), ("cpu", 10.0)])
def test_no_stop_on_a_gpu_without_a_limit_or_under_it(device, limit, capsys):
    est = TrainingTimeEstimate(max_cpu_hours=limit, report=False).attach(e := engine(device, 100_000, 0.001))
    e.run(range(8), max_epochs=1)
    assert e.state.iteration == 8 and est.estimate_seconds is not None
    assert capsys.readouterr().err == ""  # report=False prints nothing


def test_short_runs_estimate_at_their_end_and_one_iteration_is_never_timed():
    est = TrainingTimeEstimate(max_cpu_hours=1e-9, report=False)
    est.attach(e := engine("cpu", 3, 0.001))
    with pytest.raises(TrainingTooLong):
        e.run(range(3), max_epochs=1)
    assert e.state.iteration == 3
    one = TrainingTimeEstimate(max_cpu_hours=1e-9, report=False)
    one.attach(e1 := engine("cpu", 1, 0.001))
    e1.run(range(1), max_epochs=1)
    assert one.estimate_seconds is None


def test_format_duration():
    assert [format_duration(s) for s in (12, 600, 3 * 3600, 10 * 86400)] == ["12 s", "10 min", "3.0 h", "10.0 days"]
