"""benchmarks/report.py reads a training-step group whose implementations ran round by round in turn: one result per
implementation from the chosen statistic of its rounds, and the spread of the per-round ratios (hand-computed)."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "report.py"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("benchmark_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def interleaved_run(round_seconds: dict[str, list[float]]) -> dict:
    extra = {"impl": "interleaved", "round_seconds": round_seconds, "preset": "tiny", "mode": "eager",
             "tokens": 100, "flops": 1e9}
    return {"machine_info": {"device_type": "cpu"}, "benchmarks": [
        {"group": "train_step_tiny", "name": "test_train_step[tiny-eager]", "extra_info": extra,
         "stats": {"min": 3.0, "median": 3.0, "mean": 3.0}},
    ]}


def test_interleaved_rounds_give_each_implementation_its_rate_and_the_per_round_spread(report):
    data = interleaved_run({"genesis": [1.0, 1.2, 0.9], "hf": [1.1, 1.2, 1.0]})
    fastest = report.Run(data, "min")
    assert fastest.rate("train_step_tiny", "genesis") == pytest.approx(100 / 0.9)
    assert fastest.ratio("train_step_tiny", "genesis", "train_step_tiny", "hf") == pytest.approx(1.0 / 0.9)
    assert fastest.round_ratios("train_step_tiny", "genesis", "hf") == pytest.approx([1.1, 1.0, 1.0 / 0.9])
    row = next(r for r in report.comparison_rows(fastest) if r[1] == "genesis")
    assert "1.11x hf (100, rounds 1.00-1.11x)" in row[-1]

    median = report.Run(data, "median")
    assert median.ratio("train_step_tiny", "genesis", "train_step_tiny", "hf") == pytest.approx(1.1 / 1.0)
