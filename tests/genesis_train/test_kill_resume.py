"""SIGKILL at chosen moments (inside a save, between a save's rename and its prune, inside a prune, between steps),
then --resume: every logged number and the final weights equal the uninterrupted run's, and no incomplete directory
is ever listed as a checkpoint. `killed_run.py --kills 20` does the same at random moments."""

import importlib.util
from pathlib import Path

import pytest

from genesis_train.checkpointing import checkpoint_root, list_checkpoints

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
