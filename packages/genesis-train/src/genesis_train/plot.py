"""`genesis-train plot RUN_DIR`: one PNG of a run's metrics.jsonl, and `comparison_plot()` for several runs.

A run's figure has, each only where the run logged it: per task, a loss panel (train and validation) and an
accuracy panel; then alignment, concepts, weight norms, gradient norm, learning rate and throughput. Grokking
events (events.jsonl, or the metrics lines that carry an "event" key) are dashed vertical lines in every panel.

Keys this module does not know are ignored, so runs with new metrics still plot. Two known keys are not drawn
either: `val_ppl_lm` is exp(val_loss_lm), which the lm loss panel shows, and `mfu` is tokens/s times a constant.

matplotlib is used through its object API (Figure, no pyplot): no global figure state, no GUI backend, and
savefig picks the Agg renderer for PNG by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator

DPI = 110
PANEL_SIZE = (5.5, 3.8)  # inches per grid cell
# Tasks in the order the trainer knows them; any other task name found in the keys follows, alphabetically.
TASK_ORDER = ("lm", "coherence", "xref", "paraphrase")
ALL_TASKS = "all tasks"  # the task of an unsuffixed `loss` / `val_loss` (the mean over tasks)
TASK_KEY = re.compile(r"^(?:val_)?(?:loss|accuracy)(?:_(?P<task>.+))?$")
BLOCK_KEY = re.compile(r"^weight_norm_block_(?P<index>\d+)$")
EVENT_COLOR = "crimson"


class PlotError(Exception):
    """Bad input (a missing run directory, an unreadable metrics file); the message names the file."""


@dataclass
class Run:
    name: str
    records: list[dict[str, Any]]  # metrics lines, event lines left out
    events: list[dict[str, Any]]

    def keys(self) -> set[str]:
        return {key for record in self.records for key in record}

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(steps, values) of the records holding a finite number under `key`: a metric is only on some lines,
        and a diverged run may log NaN or infinity, which would break the axis limits."""
        steps, values = [], []
        for record in self.records:
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                steps.append(record["step"])
                values.append(value)
        return steps, values


@dataclass
class Line:
    steps: list[float]
    values: list[float]
    label: str | None
    style: dict[str, Any]
    twin: bool = False  # drawn against the panel's right-hand axis


@dataclass
class Panel:
    title: str
    ylabel: str
    lines: list[Line]
    twin_ylabel: str = ""
    accuracy: bool = False  # values are fractions: the axis shows all of 0..1, so panels compare at a glance
    log_scale: bool = False  # a log axis where the values span more than a decade (losses, gradient norms)


@dataclass
class Marker:
    """A vertical line at an event; one legend entry per distinct label and panel."""
    step: float
    label: str
    color: str = EVENT_COLOR


# --- reading a run ---------------------------------------------------------------------------------------------

def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every non-blank line of `path` as a JSON object with a numeric "step"; PlotError names file:line."""
    records = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            raise PlotError(f"{path}:{number}: not JSON ({e.msg} at column {e.colno})") from None
        except UnicodeDecodeError:
            raise PlotError(f"{path}:{number}: not UTF-8 text") from None
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            raise PlotError(f'{path}:{number}: expected a JSON object with a numeric "step"')
        records.append(record)
    return records


def load_run(run_dir: Path) -> Run:
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir}: no such run directory")
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise PlotError(f"{metrics_path}: no such file (is {run_dir} a run directory?)")
    lines = read_jsonl(metrics_path)
    if not lines:
        raise PlotError(f"{metrics_path}: empty, nothing to plot")
    records = [r for r in lines if "event" not in r]
    # events.jsonl is the record of events; event lines in metrics.jsonl are a fallback for runs without it.
    events_path = run_dir / "events.jsonl"
    events = read_jsonl(events_path) if events_path.is_file() else [r for r in lines if "event" in r]
    return Run(name=run_dir.resolve().name, records=records, events=events)


def event_markers(run: Run, color: str = EVENT_COLOR, prefix: str = "") -> list[Marker]:
    """One marker per event kind and step: several metrics often grok at the same evaluation."""
    seen = {(str(e.get("event", "event")), e["step"]) for e in run.events}
    return [Marker(step, f"{prefix}{kind} event", color) for kind, step in sorted(seen, key=lambda s: (s[1], s[0]))]


# --- panels ----------------------------------------------------------------------------------------------------

def line(run: Run, key: str, label: str | None, twin: bool = False, **style: Any) -> Line | None:
    """The line of `key` in `run`, or None when the run never logged it. Validation points come once per
    evaluation, far apart, so they get markers; train lines are dense and stay plain."""
    steps, values = run.series(key)
    if not steps:
        return None
    base = {"marker": "o", "markersize": 3.5, "linewidth": 1.0} if key.startswith("val_") else {"linewidth": 1.2}
    return Line(steps, values, label, {**base, **style}, twin)


def panel(title: str, ylabel: str, lines: list[Line | None], **options: Any) -> Panel:
    return Panel(title, ylabel, [x for x in lines if x is not None], **options)


def task_names(keys: set[str]) -> list[str]:
    found = set()
    for key in keys:
        match = TASK_KEY.match(key)
        if match and not key.endswith("_seconds"):
            found.add(match["task"] or ALL_TASKS)
    known = [t for t in (ALL_TASKS, *TASK_ORDER) if t in found]  # the mean over tasks heads the others
    return known + sorted(found - set(known))


def task_panels(run: Run) -> list[Panel]:
    """Per task, a loss panel and (where logged) an accuracy panel, train and validation on each."""
    groups = []
    for task in task_names(run.keys()):
        suffix = "" if task == ALL_TASKS else f"_{task}"
        group = [panel(f"{task}: {kind}", kind, [
            line(run, f"{kind}{suffix}", "train", color="C0"),
            line(run, f"val_{kind}{suffix}", "validation", color="C1"),
        ], accuracy=kind == "accuracy", log_scale=kind == "loss") for kind in ("loss", "accuracy")]
        groups.append([p for p in group if p.lines])
    # Tasks with both panels first (a stable sort keeps the task order among them): on a two-column grid each
    # then fills one row, loss beside accuracy, and a task with loss alone cannot shift the pairs after it.
    return [p for group in sorted(groups, key=len, reverse=True) for p in group]


def weight_norm_panel(run: Run) -> Panel:
    blocks = sorted((int(m["index"]), m.string) for m in map(BLOCK_KEY.match, run.keys()) if m)
    colors = colormaps["viridis"]
    # A legend of every block is unreadable for deep models: past six, only the first and last are named and
    # the colormap (dark = first, light = last) orders the rest.
    named = {0, len(blocks) - 1} if len(blocks) > 6 else set(range(len(blocks)))
    return panel("weight norm", "L2 norm", [
        line(run, "weight_norm", "total", color="black", linewidth=1.8),
        *(line(run, key, f"block {index:02d}" if i in named else None,
               color=colors(0.9 * i / max(len(blocks) - 1, 1)), linewidth=0.8)
          for i, (index, key) in enumerate(blocks)),
    ])


def run_panels(run: Run) -> list[Panel]:
    panels = task_panels(run) + [
        panel("alignment", "distance", [
            line(run, "alignment_distance", "distance", color="C0"),
            line(run, "alignment_distance_shuffled", "shuffled baseline", color="gray", linestyle=":"),
            line(run, "alignment_ratio", "ratio", twin=True, color="C2"),
        ], twin_ylabel="ratio"),
        panel("concepts", "silhouette", [
            line(run, "concepts_silhouette", "silhouette", color="C0"),
            line(run, "concepts_silhouette_shuffled", "shuffled baseline", color="gray", linestyle=":"),
        ]),
        weight_norm_panel(run),
        # One line each: the title names it, so its legend holds only the events.
        panel("gradient norm", "L2 norm", [line(run, "grad_norm", None, color="C3")], log_scale=True),
        panel("learning rate", "lr", [line(run, "lr", None, color="C4")]),
        panel("throughput", "tokens / s", [line(run, "tokens_per_s", None, color="C5")]),
    ]
    return [p for p in panels if p.lines]


# --- drawing ---------------------------------------------------------------------------------------------------

def spans_decades(values: list[float]) -> bool:
    """A log axis reads better when positive values span more than a decade (a loss from 10 down to 0.1)."""
    return bool(values) and min(values) > 0 and max(values) > 10 * min(values)


class PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain numbers (0.3, 2, 6) instead of 3x10^-1: shorter, and read at a glance.
    LogFormatter still decides which ticks get a label, so minor ticks stay unlabelled over many decades."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:.3g}" if super().__call__(x, pos) else ""


def draw_panel(ax: Axes, panel: Panel, markers: list[Marker], xlim: tuple[float, float]) -> None:
    twin = None
    if any(x.twin for x in panel.lines):
        twin = ax.twinx()
        # `ax` above its twin, so the legend (on `ax`) is not hidden under the twin's lines; "best" then keeps
        # it off the main lines, the more numerous ones.
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
    for axis in (ax, twin):
        if axis is None:
            continue
        lines = [x for x in panel.lines if (axis is twin) == x.twin]
        for x in lines:
            axis.plot(x.steps, x.values, label=x.label or "_nolegend_", **x.style)
        values = [v for x in lines for v in x.values]
        if panel.log_scale and spans_decades(values):
            axis.set_yscale("log")
            axis.yaxis.set_major_formatter(PlainLogFormatter())
            axis.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))
        elif panel.accuracy and values and 0 <= min(values) and max(values) <= 1:
            axis.set_ylim(-0.03, 1.03)
    labelled = set()
    for m in markers:
        ax.axvline(m.step, color=m.color, linestyle="--", linewidth=1.0, alpha=0.8,
                   label=m.label if m.label not in labelled else "_nolegend_")
        labelled.add(m.label)
    ax.set(title=panel.title, xlabel="step", ylabel=panel.ylabel, xlim=xlim)
    # matplotlib's default tick spacing, but whole steps only: no step 2.5 on a short run.
    ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10], integer=True))
    ax.grid(alpha=0.3)
    if not panel.lines:
        ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center", color="gray")
    entries = list(zip(*ax.get_legend_handles_labels()))
    if twin is not None:
        twin.set_ylabel(panel.twin_ylabel)
        entries += zip(*twin.get_legend_handles_labels())
    entries.sort(key=lambda entry: entry[1] in labelled)  # the lines first, events last (a stable sort)
    if entries:
        ax.legend(*zip(*entries), fontsize=7, loc="best", framealpha=0.8)


def step_range(panels: list[Panel], markers: list[Marker]) -> tuple[float, float]:
    """One x range for every panel, so the same step sits at the same place in each column."""
    steps = [s for p in panels for x in p.lines for s in (x.steps[0], x.steps[-1])] + [m.step for m in markers]
    if not steps:
        return (0.0, 1.0)
    low, high = min(steps), max(steps)
    pad = 0.02 * (high - low) or 1  # a margin, so markers at the first and last step are not cut in half
    return (low - pad, high + pad)


def save_figure(panels: list[Panel], markers: list[Marker], title: str, out: Path, columns: int = 0) -> Path:
    """Draws the panels on a grid (`columns`, or 1-3 by their number) and writes the PNG to `out` atomically."""
    n = len(panels)
    columns = min(columns or (1 if n == 1 else 2 if n <= 4 else 3), n)
    rows = math.ceil(n / columns)
    width, height = PANEL_SIZE
    # Constrained layout is matplotlib's tight layout that also makes room for twin axes and the title.
    fig = Figure(figsize=(max(7.0, width * columns), height * rows + 0.4), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    xlim = step_range(panels, markers)
    for ax, p in zip(axes, panels):
        draw_panel(ax, p, markers, xlim)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=14, fontweight="bold")
    write_png(fig, out)
    return out


def write_png(fig: Figure, out: Path) -> None:
    """Into a temporary file beside `out`, then renamed over it: a reader never sees half a PNG, and a failure
    leaves no file behind."""
    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as e:  # named after `out`: the temporary name would only puzzle
        raise PlotError(f"{out}: cannot write ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; a plot is meant to be shared
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --- entry points ----------------------------------------------------------------------------------------------

def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Writes the figure of one run to `out` (default RUN_DIR/plot.png) and returns its path."""
    run = load_run(run_dir)
    panels = run_panels(run)
    if not panels:
        raise PlotError(f"{run_dir / 'metrics.jsonl'}: no metric this command plots "
                        f"(keys: {', '.join(sorted(run.keys()))})")
    # With accuracies, two columns put each task's loss and accuracy side by side on one row.
    columns = 2 if any(p.accuracy for p in panels) else 0
    return save_figure(panels, event_markers(run), run.name, out or run_dir / "plot.png", columns)


def comparison_plot(run_dirs: list[Path], out: Path, metrics: list[str]) -> Path:
    """One panel per metric name, one line per run (labelled by its directory name) and each run's events in
    that run's colour. A metric no run logged still gets its panel, marked "not logged", so a misspelt name
    shows instead of vanishing."""
    runs = [load_run(d) for d in run_dirs]
    colors = [f"C{i % 10}" for i in range(len(runs))]
    panels = [panel(metric, metric, [line(run, metric, run.name, color=c) for run, c in zip(runs, colors)],
                    accuracy="accuracy" in metric, log_scale="loss" in metric)
              for metric in metrics]
    markers = [m for run, c in zip(runs, colors) for m in event_markers(run, c, prefix=f"{run.name}: ")]
    return save_figure(panels, markers, " vs ".join(run.name for run in runs), out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genesis-train plot",
                                     description="Write a PNG of a run's metrics.jsonl (and events.jsonl).")
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="the run directory (--out-dir of the run)")
    parser.add_argument("--out", metavar="PNG", type=Path, help="where to write the PNG (default: RUN_DIR/plot.png)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = plot_run(args.run_dir, args.out)
    except PlotError as e:
        print(f"genesis-train plot: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an unreadable metrics or events file; errors of writing are PlotErrors
        print(f"genesis-train plot: error: {e.filename or 'writing the PNG'}: {e.strerror}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
