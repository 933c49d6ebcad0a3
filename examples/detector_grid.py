"""Replay recorded runs through the grokking detector over a grid of window, threshold and span: which settings fire
in the grokking run between memorization and generalization, and stay quiet in the control and on Bible text.

    hatch run test:python examples/detector_grid.py --grokking runs/grokking --bible runs/bible-3000

`--grokking` is the folder `examples/grokking.py` writes (its grokking, control and grokfast runs are read as
validation accuracy, the metric configs/grokking.toml watches); `--bible` is a genesis-train run directory on Bible
text (read as validation LM loss, the default metric), replayed twice: with the memorization condition, and with it
off (`memorization` = infinity), to show what the plateau-and-drop shape alone would do through the fall of the loss.
The replay feeds the detector exactly as the trainer does: each evaluation with the last train value logged at or
before it. It prints one table (Markdown with `--markdown`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

from genesis_train.callbacks.grokking import GrokkingDetector, GrokkingRule

WINDOWS = (250, 500, 1000, 1500)
THRESHOLDS = (0.05, 0.10, 0.20)
SPANS = (250, 500, 1000)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def replay(records: list[dict[str, Any]], rule: GrokkingRule) -> list[int]:
    """The steps where the detector fires on a run's metrics.jsonl records."""
    detector = GrokkingDetector(rule)
    last_train, fired = None, []
    for record in records:
        if "event" in record:
            continue
        if rule.train_metric in record:
            last_train = record[rule.train_metric]
        if rule.metric in record and detector.add(record["step"], record[rule.metric], last_train):
            fired.append(record["step"])
    return fired


def first_step(records: list[dict[str, Any]], key: str, at_least: float) -> int | None:
    return next((r["step"] for r in records if r.get(key) is not None and r[key] >= at_least), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grokking", type=Path, required=True, help="the folder examples/grokking.py wrote")
    parser.add_argument("--bible", type=Path, required=True, help="a genesis-train run directory on Bible text")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)

    runs = {name: read_jsonl(args.grokking / name / "metrics.jsonl") for name in ("grokking", "control", "grokfast")}
    bible = read_jsonl(args.bible / "metrics.jsonl")
    memorized = first_step(runs["grokking"], "accuracy_lm", 0.99)
    generalized = first_step(runs["grokking"], "val_accuracy_lm", 0.90)
    header = ["window", "threshold", "span", "grokking run", f"in ({memorized}, {generalized}]", "control",
              "grokfast", "Bible", "Bible, no memorization check"]
    rows = []
    for window, threshold, span in itertools.product(WINDOWS, THRESHOLDS, SPANS):
        accuracy = GrokkingRule(metric="val_accuracy_lm", window=window, threshold=threshold, span=span)
        loss = GrokkingRule(metric="val_loss_lm", window=window, threshold=threshold, span=span)
        fired = {name: replay(records, accuracy) for name, records in runs.items()}
        grok = fired["grokking"]
        inside = bool(grok) and memorized is not None and generalized is not None and memorized < grok[0] <= generalized
        rows.append([window, threshold, span, grok or "-", "yes" if inside else "no", fired["control"] or "-",
                     fired["grokfast"] or "-", replay(bible, loss) or "-",
                     replay(bible, GrokkingRule(metric="val_loss_lm", window=window, threshold=threshold, span=span,
                                                memorization=math.inf)) or "-"])
    cells = [[str(c) for c in row] for row in [header, *rows]]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in cells[1:]:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        for row in cells:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
