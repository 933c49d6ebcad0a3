"""Metrics of a run: one JSON object a line in `<run>/metrics.jsonl` (the source of truth), events in
`<run>/events.jsonl`, the same numbers as TensorBoard scalars when it is on, and a progress line on the terminal."""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO


class JsonLinesLog:
    """Appends records (each with a "step") to a JSON-lines file. On resume, records past the resumed step are
    dropped first, so the file tells one consistent history even after a crash between a line and a checkpoint."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            path.write_text("")
        elif path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        self._file = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        # JSON has no NaN or Infinity: a non-finite number is written as null, so every line stays valid JSON.
        finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        self._file.write(json.dumps(finite, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardLog:
    """Every numeric value of a record as a scalar, events as text, under `<run>/tensorboard/`."""

    def __init__(self, log_dir: Path, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides what an interrupted run wrote past the checkpoint it resumes from.
        self.writer = SummaryWriter(str(log_dir), purge_step=None if resume_step is None else resume_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        step = record["step"]
        if "event" in record:
            self.writer.add_text(f"events/{record['event']}", json.dumps(record), step)
            return
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class RunLog:
    """Where a run's numbers go: metrics.jsonl, events.jsonl (events also as metrics lines) and TensorBoard."""

    METRICS, EVENTS, TENSORBOARD = "metrics.jsonl", "events.jsonl", "tensorboard"

    def __init__(self, run_dir: Path, tensorboard: bool, resume_step: int | None = None):
        self.metrics = JsonLinesLog(run_dir / self.METRICS, resume_step)
        self.events = JsonLinesLog(run_dir / self.EVENTS, resume_step)
        self.tensorboard = TensorBoardLog(run_dir / self.TENSORBOARD, resume_step) if tensorboard else None

    @classmethod
    def remove(cls, run_dir: Path) -> None:
        """Deletes what a RunLog wrote in `run_dir` (for --overwrite)."""
        shutil.rmtree(run_dir / cls.TENSORBOARD, ignore_errors=True)
        for name in (cls.METRICS, cls.EVENTS):
            (run_dir / name).unlink(missing_ok=True)

    @property
    def path(self) -> Path:
        return self.metrics.path

    def write(self, record: dict[str, Any]) -> None:
        self.metrics.write(record)
        if "event" in record:
            self.events.write(record)
        if self.tensorboard:
            self.tensorboard.write(record)

    def close(self) -> None:
        self.metrics.close()
        self.events.close()
        if self.tensorboard:
            self.tensorboard.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Progress:
    """A one-line progress display: redrawn in place on a terminal, printed as plain lines otherwise."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, stream: TextIO = sys.stderr):
        self.total, self.start, self.enabled, self.stream = total, start, enabled, stream
        self.tty = stream.isatty()
        self.t0 = time.perf_counter()

    def update(self, step: int, text: str) -> None:
        if not self.enabled:
            return
        done = step - self.start
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (self.total - step) if done else 0.0
        line = f"step {step}/{self.total} {100 * step / self.total:5.1f}% | {text} | {elapsed:6.0f}s, eta {eta:5.0f}s"
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
