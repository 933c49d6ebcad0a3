"""SIGKILL at chosen moments (inside a save, between a save's rename and its prune, inside a prune, between steps),
then --resume: every logged number and the final weights equal the uninterrupted run's, and no incomplete directory
is ever listed as a checkpoint. `killed_run.py --kills 20` does the same at random moments."""

import importlib.util
from pathlib import Path

import pytest

from genesis_train.checkpointing import checkpoint_root, holds_a_run, list_checkpoints

# killed_run.py is a script as well as this test's helper (the suite imports test files, not packages).
_spec = importlib.util.spec_from_file_location("killed_run", Path(__file__).with_name("killed_run.py"))
killed_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(killed_run)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    work = tmp_path_factory.mktemp("kills")
    run_dir = work / "reference"
    done = killed_run.genesis_train(killed_run.run_options(run_dir, work / "cache"))
    assert done.returncode == 0, done.stderr
    return work, killed_run.read_metrics(run_dir), killed_run.final_weights(run_dir)


@pytest.mark.parametrize("moment, nth, what", [
    ("save", 12, "inside the second save, its files written and not yet renamed into place"),
    ("replace", 3, "after the third save's rename, before its prune: three checkpoints on disk, two kept"),
    ("prune", 3, "inside a prune, the oldest checkpoint half deleted"),
    ("step", 7, "between steps 6 and 7"),
])
def test_a_killed_run_resumes_exactly(reference, moment, nth, what):
    work, expected_metrics, expected_weights = reference
    run_dir = work / f"{moment}-{nth}"
    outcome = killed_run.kill_and_resume(run_dir, work / "cache", moment, nth)
    assert outcome["killed"], what
    assert outcome["incomplete_listed"] == []
    assert outcome["resumed"]
    assert outcome["returncode"] == 0, outcome["stderr"]
    assert killed_run.read_metrics(run_dir) == expected_metrics
    assert killed_run.final_weights(run_dir) == expected_weights
    # What the kill left behind is gone: no temporary or half-deleted directory, K checkpoints.
    assert sorted(p.name for p in checkpoint_root(run_dir).iterdir()) == [p.name for p in list_checkpoints(run_dir)]
    assert len(list_checkpoints(run_dir)) == 2


@pytest.mark.parametrize("moment, nth", [("sigint", 5), ("sigterm", 9)])
def test_a_signalled_run_checkpoints_its_step_and_resumes_exactly(reference, moment, nth):
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM during step n: the step finishes, a checkpoint of it is written
    (step 5 is no checkpoint step of the run), the exit status is 128 + the signal, and --resume continues exactly."""
    work, expected_metrics, expected_weights = reference
    run_dir = work / f"{moment}-{nth}"
    outcome = killed_run.kill_and_resume(run_dir, work / "cache", moment, nth)
    assert outcome["killed"], outcome["message"]
    signal_name = "SIGINT" if moment == "sigint" else "SIGTERM"
    assert outcome["message"] == (f"genesis-train: interrupted by {signal_name} after step {nth}: checkpoint "
                                  f"{checkpoint_root(run_dir) / f'step-{nth:08d}'} written (continue with --resume)")
    assert outcome["resumed"]
    assert outcome["returncode"] == 0, outcome["stderr"]
    assert killed_run.read_metrics(run_dir) == expected_metrics
    assert killed_run.final_weights(run_dir) == expected_weights


def test_ctrl_c_before_the_first_step_leaves_nothing(tmp_path):
    """SIGINT during the first evaluation: no step was trained, nothing is kept, the same command starts again."""
    run_dir = tmp_path / "run"
    options = killed_run.run_options(run_dir, tmp_path / "cache")
    stopped = killed_run.genesis_train(options, kill=("sigint-eval", 1))
    assert stopped.returncode == 130, stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1] == ("genesis-train: interrupted by SIGINT before the first step; "
                                                        "nothing written")
    assert not holds_a_run(run_dir)
