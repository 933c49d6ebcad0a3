"""Grokking detection: a validation series that sat on a plateau while the model memorized, then dropped sharply.

The rule (`GrokkingRule`), on the points (step, value) of one validation series, "lower is better" (a loss as it is,
an accuracy as its error 1 - accuracy):

1. Plateau ending at step p: the history covers [p - window, p], and no point in it is more than `tolerance`
   (relative) below the window's starting level (the median of its first three points). The series stayed flat or
   got worse (as validation loss does while a model memorizes); an ordinary fall of the loss early in training is
   not a plateau.
2. Memorization at p, when the matching train series is logged (the metric's name without "val_": `loss_lm` for
   `val_loss_lm`, `accuracy_lm` for `val_accuracy_lm`): the last train value at or before p is at most
   `memorization` times the validation value at p (train loss far below validation loss, or train error far
   below validation error). Without a train series this condition is not checked.
3. Drop at step s: some plateau end p with s - span <= p < s and memorization at p, and the value at s is at
   least `threshold` (relative) below the plateau's level (the median of the plateau window's points).
4. One event per plateau: after an event at step e, a new event needs a plateau that starts at or after e.

The detector keeps every point it saw, so its state (saved with each checkpoint) makes a resumed run fire exactly
where the uninterrupted run would.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from genesis_train.callbacks import Callback, Metrics

if TYPE_CHECKING:
    from genesis_train.trainer import Trainer


@dataclass(frozen=True)
class GrokkingRule:
    # Defaults chosen by replaying recorded runs over a grid (examples/detector_grid.py, README "Grokking on modular
    # addition"): the smallest window that stays quiet through the fall of a Bible run's loss, and one that fits
    # inside the modular-addition plateau.
    metric: str = "val_loss_lm"
    window: int = 500
    threshold: float = 0.10
    span: int = 500
    tolerance: float = 0.05
    memorization: float = 0.5

    @property
    def higher_is_better(self) -> bool:
        return "accuracy" in self.metric

    @property
    def train_metric(self) -> str:
        return self.metric.removeprefix("val_")

    def badness(self, value: float) -> float:
        """The series as the rule reads it: lower is better."""
        return 1.0 - value if self.higher_is_better else value


@dataclass
class Point:
    step: int
    value: float  # as the rule reads it (lower is better)
    train: float | None  # the train series at or before this step, read the same way; None when not logged


class GrokkingDetector:
    """Feeds points of one series through `GrokkingRule`; `add` returns the event a point completes, if any."""

    def __init__(self, rule: GrokkingRule):
        self.rule = rule
        self.points: list[Point] = []
        self.last_event_step: int | None = None

    def add(self, step: int, value: float, train_value: float | None = None) -> dict[str, Any] | None:
        rule = self.rule
        point = Point(step, rule.badness(value), None if train_value is None else rule.badness(train_value))
        self.points.append(point)
        for end in reversed(self.points[:-1]):
            if end.step < step - rule.span:
                break
            plateau = self._plateau(end)
            if plateau is None or not self._memorized(end):
                continue
            level = statistics.median(p.value for p in plateau)
            if point.value < (1 - rule.threshold) * level:  # strict: a series at 0 cannot drop
                self.last_event_step = step
                return self._event(point, end, plateau, level)
        return None

    def _plateau(self, end: Point) -> list[Point] | None:
        """The points of a plateau window ending at `end`, or None if [end - window, end] is not one."""
        rule = self.rule
        start = end.step - rule.window
        if not self.points or self.points[0].step > start:
            return None  # the history does not reach back a whole window
        if self.last_event_step is not None and start < self.last_event_step:
            return None  # one event per plateau
        inside = [p for p in self.points if start <= p.step <= end.step]
        if len(inside) < 3:
            return None
        starting_level = statistics.median(p.value for p in inside[:3])
        if min(p.value for p in inside) < (1 - rule.tolerance) * starting_level:
            return None
        return inside

    def _memorized(self, end: Point) -> bool:
        return end.train is None or end.train <= self.rule.memorization * end.value

    def _event(self, point: Point, end: Point, plateau: list[Point], level: float) -> dict[str, Any]:
        rule = self.rule
        shown = (lambda v: 1.0 - v) if rule.higher_is_better else (lambda v: v)  # back to the metric's own scale
        return {
            "step": point.step,
            "event": "grokking",
            "metric": rule.metric,
            "before": shown(level),
            "after": shown(point.value),
            "plateau_start": plateau[0].step,
            "plateau_end": end.step,
            "train_at_plateau_end": None if end.train is None else shown(end.train),
            **{f"rule_{k}": v for k, v in asdict(rule).items() if k != "metric"},
        }

    def state_dict(self) -> dict[str, Any]:
        return {"points": [[p.step, p.value, p.train] for p in self.points], "last_event_step": self.last_event_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.points = [Point(int(step), float(value), train) for step, value, train in state["points"]]
        self.last_event_step = state["last_event_step"]


class GrokkingCallback(Callback):
    """Runs the detector at every evaluation; on an event: a metrics line, events.jsonl, a terminal message and a
    checkpoint named for the event, which keep-last-K never deletes."""

    name = "grokking"

    def __init__(self, rule: GrokkingRule):
        self.detector = GrokkingDetector(rule)
        self.last_train: float | None = None

    def on_step_end(self, trainer: Trainer, step: int, record: Metrics) -> None:
        # The train series is logged at log lines, the validation series at evaluations: remember the latest.
        if self.detector.rule.train_metric in record:
            self.last_train = record[self.detector.rule.train_metric]

    def on_evaluate(self, trainer: Trainer, step: int, record: Metrics) -> None:
        rule = self.detector.rule
        if self.detector.rule.train_metric in record:
            self.last_train = record[rule.train_metric]
        event = self.detector.add(step, record[rule.metric], self.last_train)
        if event is not None:
            checkpoint = trainer.save(name=f"grokking-step-{step:08d}")
            event["checkpoint"] = str(checkpoint.relative_to(trainer.run_dir))
            trainer.record_event(event)
            trainer.log(f"grokking event at step {step}: {rule.metric} {event['before']:.4g} -> "
                        f"{event['after']:.4g} after a plateau from step {event['plateau_start']}; "
                        f"checkpoint {checkpoint}")

    def state_dict(self) -> dict[str, Any]:
        return {**self.detector.state_dict(), "last_train": self.last_train}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.detector.load_state_dict(state)
        self.last_train = state["last_train"]
