"""The grokking proof: three runs of `configs/grokking.toml` through `genesis-train`, one JSON summary, one figure.

    hatch run test:python examples/grokking.py --out runs/grokking   # ~9 minutes on the project's 2-core CPU

1. grokking: a + b mod 97, 20% of the equations for training, weight decay 1. The model memorizes its training
   equations within ~100 steps, sits at the validation accuracy that commutativity gives away for free (about the
   training fraction: b + a is often a training equation when a + b is held out), then generalizes.
2. control: the same without weight decay: it memorizes and stays there.
3. grokfast: the grokking run with `--grokfast` (Lee et al. 2024: alpha 0.98, lambda 2).

Every run has `--detect-grokking` on (the config watches validation accuracy). `RUN_DIR/summary.json` records for
each run the step where training accuracy first reached 99%, where validation accuracy first reached 90% and 99%,
every step the detector fired, and the validation accuracy, loss and weight norm at every evaluation;
`RUN_DIR/grokking.png` draws accuracy, loss and weight norm of the three runs with their events.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "grokking.toml"
RUNS = {
    "grokking": [],
    "control": ["--weight-decay", "0"],
    "grokfast": ["--grokfast"],
}
PLOTTED = ["accuracy_lm", "val_accuracy_lm", "loss_lm", "val_loss_lm", "weight_norm"]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def first_step(records: list[dict[str, Any]], key: str, at_least: float) -> int | None:
    return next((r["step"] for r in records if key in r and r[key] >= at_least), None)


def summarize(run_dir: Path, seconds: float) -> dict[str, Any]:
    records = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "event" not in r]
    evaluations = [r for r in records if "val_accuracy_lm" in r]
    return {
        "seconds": round(seconds, 1),
        "steps": records[-1]["step"],
        "train_accuracy_99": first_step(records, "accuracy_lm", 0.99),
        "val_accuracy_90": first_step(records, "val_accuracy_lm", 0.90),
        "val_accuracy_99": first_step(records, "val_accuracy_lm", 0.99),
        "events": [e["step"] for e in read_jsonl(run_dir / "events.jsonl")],
        "final_val_accuracy": evaluations[-1]["val_accuracy_lm"],
        "evaluations": [{k: r.get(k) for k in ("step", "val_accuracy_lm", "val_loss_lm")} for r in evaluations],
        "weight_norm": [[r["step"], r["weight_norm"]] for r in records if "weight_norm" in r],
        "train_accuracy": [[r["step"], r["accuracy_lm"]] for r in records if "accuracy_lm" in r],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/grokking"), help="where the three runs go")
    parser.add_argument("--steps", type=int, default=2100, help="steps of each run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    summary: dict[str, Any] = {"config": str(CONFIG.relative_to(REPO)), "steps": args.steps, "seed": args.seed,
                               "runs": {}}
    for name, options in RUNS.items():
        run_dir = args.out / name
        command = [sys.executable, "-m", "genesis_train.cli", "--config", str(CONFIG), "--steps", str(args.steps),
                   "--seed", str(args.seed), "--out-dir", str(run_dir), "--overwrite", "--no-progress", *options]
        print(f"{name}: {' '.join(command[2:])}", flush=True)
        t0 = time.perf_counter()
        subprocess.run(command, check=True)
        summary["runs"][name] = summarize(run_dir, time.perf_counter() - t0)
        shown = {k: v for k, v in summary["runs"][name].items() if not isinstance(v, list) or k == "events"}
        print(f"{name}: {shown}", flush=True)

    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    from genesis_train.plot import comparison_plot

    figure = comparison_plot([args.out / name for name in RUNS], args.out / "grokking.png", PLOTTED)
    print(f"wrote {args.out / 'summary.json'} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
