"""Kill a genesis-train run with SIGKILL at a chosen moment, resume it, and compare it with the uninterrupted run.

Used by test_kill_resume.py (a few chosen moments, in CI time) and runnable on its own for many random kills:

    hatch run test:python tests/genesis_train/killed_run.py --kills 20 --seed 1

A child process runs `genesis-train` with one function wrapped so that its n-th call kills the process:
- `save`: `checkpointing._fsync`, called for each file of a checkpoint being saved (inside a save, before the
  rename that makes it visible);
- `replace`: `checkpointing.prune`, called by a save right after its rename (the new checkpoint is in place, the
  oldest not yet pruned: K+1 checkpoints on disk);
- `prune`: `os.unlink`, called by `shutil.rmtree` while a pruned checkpoint is deleted (half-deleted directory);
- `step`: `Trainer.train_step` (between two steps);
- `sigint`, `sigterm`: the n-th `Trainer.train_step` sends the process that signal in the middle of the step (a user's
  Ctrl-C, a scheduler's SIGTERM): the run finishes the step, writes a checkpoint and exits with 128 + the signal;
- `sigint-eval`: SIGINT in the middle of the n-th evaluation (the first one comes before any step).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

MOMENTS = ("save", "replace", "prune", "step")
# The exit status of a run stopped at each moment: SIGKILL kills it, the others it survives and stops itself.
SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigint-eval": signal.SIGINT}
# Numbers of the process rather than of the run: its speed, and what it holds in memory (logged once a process).
TIMING = ("tokens_per_s", "mfu", "state_mb")


def run_options(run_dir: Path, cache_dir: Path) -> list[str]:
    """A short multi-task run on the built-in corpus: --log-interval 3 does not divide --checkpoint-interval 4."""
    return ["--mode", "grokking", "--steps", "14", "--batch-size", "4", "--block-size", "32", "--vocab-size", "512",
            "--lr", "3e-3", "--min-lr", "3e-4", "--warmup-steps", "2", "--log-interval", "3", "--eval-interval", "6",
            "--eval-batches", "2", "--checkpoint-interval", "4", "--keep-checkpoints", "2", "--device", "cpu",
            "--no-progress", "--tensorboard", "off", "--cache-dir", str(cache_dir), "--out-dir", str(run_dir)]


def child(moment: str, nth: int, options: list[str]) -> int:
    """genesis-train with the n-th call of the moment's function preceded by SIGKILL (or the moment's signal)."""
    from genesis_train import checkpointing, cli, trainer

    calls = 0
    signum = SIGNALS.get(moment, signal.SIGKILL)

    def killing(original):
        def wrapped(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == nth:
                os.kill(os.getpid(), signum)
            return original(*args, **kwargs)
        return wrapped

    if moment == "save":
        checkpointing._fsync = killing(checkpointing._fsync)
    elif moment == "replace":
        checkpointing.prune = killing(checkpointing.prune)
    elif moment == "prune":
        real_delete = checkpointing._delete

        def delete(path):  # kill on the n-th file unlinked while deleting a pruned checkpoint
            unlink = os.unlink
            os.unlink = killing(unlink)
            try:
                real_delete(path)
            finally:
                os.unlink = unlink
        checkpointing._delete = delete
    elif moment in ("step", "sigint", "sigterm"):
        trainer.Trainer.train_step = killing(trainer.Trainer.train_step)
    elif moment == "sigint-eval":
        trainer.Trainer.evaluate = killing(trainer.Trainer.evaluate)
    else:
        raise SystemExit(f"unknown moment {moment!r}: choose one of {', '.join([*MOMENTS, *SIGNALS])}")
    return cli.main(options)


def genesis_train(options: list[str], kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "GENESIS_KERNELS_BACKEND": "torch"}
    if kill is None:
        command = [sys.executable, "-m", "genesis_train.cli", *options]
    else:
        command = [sys.executable, __file__, "--child", kill[0], str(kill[1]), "--", *options]
    return subprocess.run(command, capture_output=True, text=True, env=env)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the timing numbers."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING and not k.endswith("_seconds")}
            for line in lines if line.strip()]


def final_weights(run_dir: Path) -> bytes:
    from genesis_train.checkpointing import latest_checkpoint

    return (latest_checkpoint(run_dir) / "model.safetensors").read_bytes()


def incomplete_listed(run_dir: Path) -> list[str]:
    """Listed checkpoints that are not whole: each must pass the manifest check."""
    from genesis_model import CheckpointError
    from genesis_train.checkpointing import check_checkpoint, list_checkpoints

    bad = []
    for path in list_checkpoints(run_dir):
        try:
            check_checkpoint(path)
        except CheckpointError as e:
            bad.append(str(e))
    return bad


def kill_and_resume(run_dir: Path, cache_dir: Path, moment: str, nth: int) -> dict[str, Any]:
    """Kills a run at (moment, nth), checks what is listed, resumes it (or starts it again when no checkpoint was
    complete yet) to the end. Returns what happened."""
    options = run_options(run_dir, cache_dir)
    killed = genesis_train(options, kill=(moment, nth))
    stopped_by = 128 + SIGNALS[moment] if moment in SIGNALS else -signal.SIGKILL
    outcome = {"moment": moment, "nth": nth, "killed": killed.returncode == stopped_by,
               "message": (killed.stderr.strip().splitlines() or [""])[-1],
               "incomplete_listed": incomplete_listed(run_dir)}
    from genesis_train.checkpointing import latest_checkpoint

    again = options + (["--resume"] if latest_checkpoint(run_dir) else ["--overwrite"])
    finished = genesis_train(again)
    outcome["resumed"] = "--resume" in again
    outcome["returncode"] = finished.returncode
    outcome["stderr"] = finished.stderr[-2000:]
    return outcome


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1], int(argv[2]), argv[4:])
    parser = argparse.ArgumentParser(description="kill genesis-train at random moments and compare the resumed runs")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/genesis-kills"))
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    cache_dir = args.work / "cache"
    reference = args.work / "reference"
    import shutil

    shutil.rmtree(args.work, ignore_errors=True)
    done = genesis_train(run_options(reference, cache_dir))
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return 1
    expected_metrics, expected_weights = read_metrics(reference), final_weights(reference)
    # Calls of each function in the uninterrupted run bound the random n (4 saves of 8 fsyncs, 2 prunes of 6 files).
    limits = {"save": 32, "replace": 4, "prune": 12, "step": 14}
    failures = 0
    for i in range(args.kills):
        moment = MOMENTS[i % len(MOMENTS)]
        nth = rng.randint(1, limits[moment])
        run_dir = args.work / f"kill-{i:02d}"
        outcome = kill_and_resume(run_dir, cache_dir, moment, nth)
        exact = (outcome["returncode"] == 0 and read_metrics(run_dir) == expected_metrics
                 and final_weights(run_dir) == expected_weights)
        ok = exact and not outcome["incomplete_listed"]
        failures += not ok
        print(f"kill {i + 1:2d}: {moment} call {nth:2d}: {'killed' if outcome['killed'] else 'not reached'}, "
              f"{'resumed' if outcome['resumed'] else 'started again'}, "
              f"{'identical metrics and weights' if exact else 'DIFFERENT: ' + outcome['stderr'][-300:]}"
              f"{'; incomplete listed: ' + str(outcome['incomplete_listed']) if outcome['incomplete_listed'] else ''}",
              flush=True)
    print(f"{args.kills - failures} of {args.kills} exact")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
