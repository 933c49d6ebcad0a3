"""Summarize a benchmark run: Genesis / peer per group, the training step against the in-run matmul peak, decoding
against the in-run bandwidth limit, and the targets of the TARGETS table marked met or not met.

    python benchmarks/report.py                 # the latest run saved for this device (benchmarks/baselines/)
    python benchmarks/report.py run.json        # a run written by `pytest benchmarks/ --benchmark-json=run.json`
    python benchmarks/report.py --stat median   # rates from the median round instead of the fastest

Every rate is work / time for one timed call, with the work taken from the test's `extra_info` (tokens, FLOPs or
bytes) and the time from the chosen statistic of its rounds (default: the fastest round, the least disturbed by
other load on a shared machine; both sides of a ratio use the same statistic). Prints Markdown.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Callable, NamedTuple

BENCHMARKS_DIR = Path(__file__).resolve().parent
STATS = {"min": min, "median": statistics.median, "mean": statistics.mean}
# A miss smaller than this is flagged as within run-to-run noise: on the quiet CPU machine two identical code paths
# (the attention fallback is a direct SDPA call) came out 0.88-1.11x across three runs, mostly within +-5%.
NOISE = 0.05

# What a group's rate counts: (extra_info key, divisor, unit), by group-name prefix (first match wins).
RATE_UNITS = [
    ("train_step", "tokens", 1, "tokens/s"),
    ("decode", "tokens", 1, "tokens/s"),
    ("tokenizer_encode", "tokens", 1, "tokens/s"),
    ("sampler", "tokens", 1, "tokens/s"),
    ("attention", "flops", 1e9, "GFLOP/s"),
    ("matmul_peak", "flops", 1e9, "GFLOP/s"),
    ("read_bible_dir", "bytes", 1e6, "MB/s"),
    ("", "bytes", 1e9, "GB/s"),  # swiglu, residual_norm, bandwidth
]

# The implementation Genesis is compared with in each group (first match wins); peers listed after it are extra
# columns of the same comparison.
PEERS = [
    ("train_step", ("hf", "floor")),
    ("decode", ("hf", "hf-static-compiled", "floor")),
    ("attention", ("sdpa", "sdpa-flash", "naive")),
    ("swiglu", ("eager",)),
    ("residual_norm", ("eager",)),
]


class TargetRow(NamedTuple):
    what: str
    goal: str
    measure: str
    of: str
    against: str
    threshold: float | None
    unit: str
    device: str | None
    from_seq: int = 0

    def per_group(self) -> bool:
        return "*" in self.of


# Every target the report lists, in its order. Columns:
# - what, goal: the report's "what" and "target" text; per-group rows fill in {group}, {impl}, {pass_} and {seq};
# - measure: "ratio" (speed of `of` over `against`, the same work), "peak" (a training step's FLOP/s over the in-run
#   matmul peak of its dtype), "bandwidth" (decoded tokens/s over the in-run bandwidth limit), "rate" (of's rate in
#   millions);
# - of: "group/impl"; a "*" in it makes a per-group row, one per measured group and implementation that match;
# - against: "group/impl", or "impl" of the same group ("" where the measure has no peer);
# - threshold: met at or above it; None: reported, not judged;
# - unit: "x" a ratio, "%" a fraction, else the rate's unit;
# - device: the device type it is judged on, None: any. Elsewhere a fixed row is reported, not judged; a per-group
#   row is left out ("cpu": every device but CUDA), as is one against another group's result the run lacks;
# - from_seq: a per-group attention row only from this sequence length on.
# The fp32 training and decoding rows are CPU targets: on a GPU those shapes measure launch overhead.
TARGETS = [TargetRow(*row) for row in [
    ("train step fp32 eager, tiny", "genesis >= 1.0x HF",
     "ratio", "train_step_tiny/genesis", "hf", 1.0, "x", "cpu"),
    ("train step fp32 eager, small", "genesis >= 1.0x HF",
     "ratio", "train_step_small/genesis", "hf", 1.0, "x", "cpu"),
    ("train step fp32 compiled, tiny", "genesis >= 1.1x HF (both compiled)",
     "ratio", "train_step_compiled_tiny/genesis", "hf", 1.1, "x", "cpu"),
    ("train step fp32 compiled, small", "genesis >= 1.1x HF (both compiled)",
     "ratio", "train_step_compiled_small/genesis", "hf", 1.1, "x", "cpu"),
    ("train step fp32 compiled, small", ">= 80% of the in-run matmul peak",
     "peak", "train_step_compiled_small/genesis", "", 0.8, "%", "cpu"),
    # A floor is the products alone, back to back: below a target, no implementation on these kernels meets it.
    ("floor, small: its products alone", "fraction of the matmul peak (bounds the 80% target)",
     "peak", "train_step_small/floor", "", None, "%", "cpu"),
    ("train step bf16 autocast, tiny", ">= 1.4x genesis fp32 eager",
     "ratio", "train_step_bf16_tiny/genesis", "train_step_tiny/genesis", 1.4, "x", "cpu"),
    # Eager `generate` and `generate(compile=True)` (genesis-compiled) alike, against HF's default `generate`.
    ("decode fp32, tiny (genesis)", "genesis >= 1.3x HF generate",
     "ratio", "decode_tiny/genesis", "hf", 1.3, "x", "cpu"),
    ("decode fp32, tiny (genesis-compiled)", "genesis-compiled >= 1.3x HF generate",
     "ratio", "decode_tiny/genesis-compiled", "hf", 1.3, "x", "cpu"),
    ("decode fp32, small (genesis)", "genesis >= 1.1x HF generate",
     "ratio", "decode_small/genesis", "hf", 1.1, "x", "cpu"),
    ("decode fp32, small (genesis-compiled)", "genesis-compiled >= 1.1x HF generate",
     "ratio", "decode_small/genesis-compiled", "hf", 1.1, "x", "cpu"),
    ("decode fp32, tiny (genesis)", ">= 80% of the in-run bandwidth limit",
     "bandwidth", "decode_tiny/genesis", "", 0.8, "%", "cpu"),
    ("decode fp32, tiny (genesis-compiled)", ">= 80% of the in-run bandwidth limit",
     "bandwidth", "decode_tiny/genesis-compiled", "", 0.8, "%", "cpu"),
    ("decode fp32, tiny (floor)", ">= 80% of the in-run bandwidth limit",
     "bandwidth", "decode_tiny/floor", "", 0.8, "%", "cpu"),
    ("decode fp32, small (genesis)", ">= 80% of the in-run bandwidth limit",
     "bandwidth", "decode_small/genesis", "", 0.8, "%", "cpu"),
    ("decode fp32, small (genesis-compiled)", ">= 80% of the in-run bandwidth limit",
     "bandwidth", "decode_small/genesis-compiled", "", 0.8, "%", "cpu"),
    ("decode fp32, small (floor)", ">= 80% of the in-run bandwidth limit",
     "bandwidth", "decode_small/floor", "", 0.8, "%", "cpu"),
    ("decode bf16 weights, tiny (genesis)", "genesis >= 2x HF fp32 generate",
     "ratio", "decode_bf16_tiny/genesis", "decode_tiny/hf", 2.0, "x", "cpu"),
    ("decode bf16 weights, tiny (genesis-compiled)", "genesis-compiled >= 2x HF fp32 generate",
     "ratio", "decode_bf16_tiny/genesis-compiled", "decode_tiny/hf", 2.0, "x", "cpu"),
    ("decode bf16 weights, tiny (floor)", "floor >= 2x HF fp32 generate",
     "ratio", "decode_bf16_tiny/floor", "decode_tiny/hf", 2.0, "x", "cpu"),
    # The GPU decoding target; genesis-compiled-torch (the decoding ops on the torch path) is the product's peer.
    ("decode bf16, deep_narrow_40 (genesis-compiled)", ">= 3x HF static cache compiled",
     "ratio", "decode_bf16_deep_narrow_40/genesis-compiled", "hf-static-compiled", 3.0, "x", "cuda"),
    ("decode bf16, deep_narrow_40 (genesis-compiled-torch)", ">= 3x HF static cache compiled",
     "ratio", "decode_bf16_deep_narrow_40/genesis-compiled-torch", "hf-static-compiled", 3.0, "x", "cuda"),
    # Attention: on the CPU the fallback's overhead over SDPA; on CUDA the Triton kernel against SDPA's flash and
    # default backends, from S = 1024.
    ("attention {pass_}, S={seq}", "fallback within 5% of SDPA (>= 0.95x)",
     "ratio", "attention_*/genesis-torch", "sdpa", 0.95, "x", "cpu"),
    ("attention {pass_}, S={seq}", "vs naive softmax(QK^T)V",
     "ratio", "attention_*/genesis-torch", "naive", None, "x", "cpu"),
    ("attention {pass_}, S={seq}", "triton >= 1.1x SDPA flash backend",
     "ratio", "attention_*/genesis-triton", "sdpa-flash", 1.1, "x", "cuda", 1024),
    ("attention {pass_}, S={seq}", "triton >= 0.8x SDPA default",
     "ratio", "attention_fwd_*/genesis-triton", "sdpa", 0.8, "x", "cuda", 1024),
    ("attention {pass_}, S={seq}", "triton >= 0.7x SDPA default",
     "ratio", "attention_fwdbwd_*/genesis-triton", "sdpa", 0.7, "x", "cuda", 1024),
    ("attention {pass_}, S={seq}", "vs naive softmax(QK^T)V",
     "ratio", "attention_*/genesis-triton", "naive", None, "x", "cuda"),
    # The fused ops, every Genesis backend; the device copy (measured on CUDA only) is the GPU kernels' yardstick.
    ("{group} ({impl})", "no slower than eager (>= 1.0x)",
     "ratio", "swiglu*/genesis*", "eager", 1.0, "x", None),
    ("{group} ({impl})", "no slower than eager (>= 1.0x)",
     "ratio", "residual_norm*/genesis*", "eager", 1.0, "x", None),
    ("{group} ({impl})", ">= 60% of the device copy bandwidth",
     "ratio", "residual_norm*/genesis*", "bandwidth/copy-bfloat16", 0.6, "%", None),
    ("tokenizer encode, one translation", ">= 1M tokens/s",
     "rate", "tokenizer_encode/genesis", "", 1.0, "M tokens/s", None),
    ("multi-task sampler, one process", ">= 1M tokens/s",
     "rate", "sampler/genesis", "", 1.0, "M tokens/s", None),
]]


@dataclass
class Result:
    group: str
    name: str
    impl: str
    seconds: float
    extra: dict

    def rate(self) -> float:
        key, divisor, _ = rate_unit(self.group)
        return self.extra[key] / self.seconds / divisor


def rate_unit(group: str) -> tuple[str, float, str]:
    return next((key, divisor, unit) for prefix, key, divisor, unit in RATE_UNITS if group.startswith(prefix))


class Run:
    """One pytest-benchmark JSON file, indexed by (group, impl). A benchmark that timed several implementations
    round by round in turn (`round_seconds` in its extra_info: {impl: [seconds of each round]}) gives one result per
    implementation, and the per-round ratios between them."""

    def __init__(self, data: dict, stat: str):
        self.machine = data.get("machine_info", {})
        self.commit = data.get("commit_info", {})
        self.datetime = data.get("datetime", "")
        self.results: dict[tuple[str, str], Result] = {}
        self.round_seconds: dict[tuple[str, str], list[float]] = {}
        for bench in data["benchmarks"]:
            extra = bench.get("extra_info", {})
            impl, group = extra.get("impl"), bench.get("group")
            if impl is None or group is None:
                continue  # not one of this suite's benchmarks
            if group in ("matmul_peak", "bandwidth"):
                impl = "-".join(filter(None, (extra.get("kind"), extra["dtype"])))
            if "round_seconds" in extra:
                for each, seconds in extra["round_seconds"].items():
                    self.round_seconds[group, each] = seconds
                    self.results[group, each] = Result(group, bench["name"], each, STATS[stat](seconds),
                                                       {**extra, "impl": each})
                continue
            self.results[group, impl] = Result(group, bench["name"], impl, bench["stats"][stat], extra)

    def get(self, group: str, impl: str) -> Result | None:
        return self.results.get((group, impl))

    def rate(self, group: str, impl: str) -> float | None:
        result = self.get(group, impl)
        return result.rate() if result else None

    def groups(self) -> list[str]:
        return sorted({group for group, _ in self.results}, key=group_order)

    def impls(self, group: str) -> list[str]:
        return [impl for g, impl in self.results if g == group]

    def matmul_peak(self, dtype: str) -> float | None:
        """FLOP/s of the in-run square matmul."""
        rate = self.rate("matmul_peak", dtype)
        return rate * 1e9 if rate else None

    def matvec_bandwidth(self, dtype: str) -> float | None:
        """Bytes/s of the in-run matrix-vector product over weights too large for the cache."""
        rate = self.rate("bandwidth", f"matvec-{dtype}")
        return rate * 1e9 if rate else None

    def ratio(self, group: str, impl: str, peer_group: str, peer: str) -> float | None:
        """Speed of `impl` in `group` over `peer` in `peer_group`, both doing the same work (peer time / time)."""
        ours, theirs = self.rate(group, impl), self.rate(peer_group, peer)
        return ours / theirs if ours and theirs else None

    def round_ratios(self, group: str, impl: str, peer: str) -> list[float]:
        """Speed of `impl` over `peer` in each round they ran in turn (empty when they were not interleaved)."""
        ours, theirs = self.round_seconds.get((group, impl)), self.round_seconds.get((group, peer))
        return [t / o for o, t in zip(ours, theirs)] if ours and theirs else []

    def fraction_of_peak(self, group: str, impl: str = "genesis") -> float | None:
        """Achieved FLOP/s of a training step over the in-run matmul peak of the dtype its matmuls run in."""
        result = self.get(group, impl)
        if result is None:
            return None
        peak = self.matmul_peak("bfloat16" if result.extra.get("mode") == "bf16" else "float32")
        return result.extra["flops"] / result.seconds / peak if peak else None

    def fraction_of_bandwidth_limit(self, group: str, impl: str = "genesis") -> float | None:
        """Decoded tokens/s over the bandwidth limit: matvec bytes/s / weight bytes streamed per token."""
        result = self.get(group, impl)
        if result is None:
            return None
        bandwidth = self.matvec_bandwidth(result.extra["dtype"])
        if not bandwidth:
            return None
        return result.rate() / (bandwidth / result.extra["bytes_per_token"])


def group_order(group: str) -> tuple[int, str, int]:
    families = ["matmul_peak", "bandwidth", "train_step_tiny", "train_step_small", "train_step_compiled",
                "train_step", "decode_tiny", "decode_small", "decode", "attention", "swiglu", "residual_norm",
                "tokenizer_encode", "sampler", "read_bible_dir"]
    family = next((i for i, prefix in enumerate(families) if group.startswith(prefix)), len(families))
    stem = group.rstrip("0123456789")
    return family, stem, int(group[len(stem):] or 0)  # attention_fwd_512 before attention_fwd_1024


# -- targets ------------------------------------------------------------------------------------------------------
@dataclass
class Target:
    what: str
    goal: str
    measure: Callable[[Run], float | None]
    threshold: float | None  # None: reported, no target
    unit: str = "x"  # "x" (a ratio), "%" (a fraction) or a rate's unit
    device: str | None = None  # "cpu" or "cuda": a target set for that device only; elsewhere reported

    def evaluate(self, run: Run) -> tuple[str, str]:
        value = self.measure(run)
        if value is None:
            return "-", "not measured"
        shown = f"{value:.0%}" if self.unit == "%" else f"{value:.2f}{self.unit}"
        if self.device is not None and run.machine.get("device_type") != self.device:
            return shown, f"reported (a {self.device.upper()} target)"
        if self.threshold is None:
            return shown, "reported"
        if value >= self.threshold:
            return shown, "met"
        if value >= self.threshold * (1 - NOISE):
            return shown, f"NOT MET (by less than {NOISE:.0%}, within noise: rerun)"
        return shown, "NOT MET"


def split(ref: str, group: str) -> tuple[str, str]:
    """(group, impl) of a table reference: "group/impl", or "impl" of `group`."""
    return tuple(ref.split("/")) if "/" in ref else (group, ref)


MEASURES: dict[str, Callable[[Run, tuple[str, str], tuple[str, str]], float | None]] = {
    "ratio": lambda run, of, against: run.ratio(*of, *against),
    "peak": lambda run, of, _: run.fraction_of_peak(*of),
    "bandwidth": lambda run, of, _: run.fraction_of_bandwidth_limit(*of),
    "rate": lambda run, of, _: run.rate(*of) / 1e6 if run.rate(*of) else None,
}


def target(row: TargetRow, group: str, impl: str, fields: dict | None = None) -> Target:
    """One row as a Target measuring `impl` of `group`; `fields` fill in a per-group row's label."""
    of, against = (group, impl), split(row.against, group)
    what = row.what.format(group=group, impl=impl, **fields) if fields is not None else row.what
    return Target(what, row.goal, lambda r: MEASURES[row.measure](r, of, against), row.threshold, row.unit,
                  row.device)


def group_targets(run: Run, rows: list[TargetRow]) -> list[Target]:
    """Per-group rows, for each measured group and implementation their `of` matches, on their device; a row
    against another group's result the run lacks is left out."""
    targets = []
    device = "cuda" if run.machine.get("device_type") == "cuda" else "cpu"  # the suite's two (workloads.DEVICE)
    for group in run.groups():
        name, _, seq = group.rpartition("_")  # attention_fwd_512: pass_ fwd, S = 512
        fields = {"pass_": name.rpartition("_")[2], "seq": int(seq) if seq.isdigit() else 0}
        matching = [(row, *row.of.split("/")) for row in rows if fnmatchcase(group, row.of.split("/")[0])
                    and row.device in (None, device) and fields["seq"] >= row.from_seq]
        # An implementation named outright gets its rows where it was not measured too ("not measured").
        named = [impl for _, _, impl in matching if "*" not in impl]
        for impl in dict.fromkeys([*run.impls(group), *named]):
            for row, _, impl_pattern in matching:
                against = split(row.against, group)
                if fnmatchcase(impl, impl_pattern) and (against[0] == group or run.get(*against)):
                    targets.append(target(row._replace(device=None), group, impl, fields))  # chosen for it
    return targets


def run_targets(run: Run) -> list[Target]:
    """The TARGETS rows for this run, in the table's order."""
    targets = []
    for per_group, rows in itertools.groupby(TARGETS, key=TargetRow.per_group):
        if per_group:
            targets += group_targets(run, list(rows))
        else:
            targets += [target(row, *row.of.split("/")) for row in rows]
    return targets


# -- rendering ------------------------------------------------------------------------------------------------------
def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def peers_of(group: str) -> tuple[str, ...]:
    return next((peers for prefix, peers in PEERS if group.startswith(prefix)), ())


def comparison_rows(run: Run) -> list[list[str]]:
    rows = []
    for group in run.groups():
        _, _, unit = rate_unit(group)
        peers = peers_of(group)
        for impl in run.impls(group):
            result = run.get(group, impl)
            if impl in peers:
                continue
            cells = [group, impl, f"{number(result.rate())} {unit}", f"{result.seconds * 1e3:,.1f}"]
            comparisons = []
            for peer in peers:
                ratio = run.ratio(group, impl, group, peer)
                if ratio is not None:
                    rounds = run.round_ratios(group, impl, peer)
                    spread = f", rounds {min(rounds):.2f}-{max(rounds):.2f}x" if rounds else ""
                    comparisons.append(f"{ratio:.2f}x {peer} ({number(run.get(group, peer).rate())}{spread})")
            if group.startswith("train_step") and impl == "genesis":
                for who in ("genesis", "hf", "floor"):
                    fraction = run.fraction_of_peak(group, who)
                    if fraction is not None:
                        comparisons.append(f"{who} {fraction:.0%} of matmul peak")
            if group.startswith("decode") and impl.startswith("genesis"):
                for who in (impl, "hf", "floor"):
                    fraction = run.fraction_of_bandwidth_limit(group, who)
                    if fraction is not None:
                        comparisons.append(f"{who} {fraction:.0%} of bandwidth limit")
            rows.append(cells + ["; ".join(comparisons)])
    return rows


def report(run: Run, source: str, stat: str) -> str:
    machine = run.machine
    lines = [
        f"Benchmark report for `{source}`",
        "",
        f"- device: {machine.get('device', '?')} ({machine.get('device_type', '?')}), "
        f"torch {machine.get('torch', '?')}, {machine.get('torch_threads', '?')} CPU threads",
        f"- run: {run.datetime or '?'}, commit {str(run.commit.get('id', '?'))[:10]}"
        + (" (uncommitted changes)" if run.commit.get("dirty") else ""),
        f"- statistic: {stat} round time of each benchmark",
    ]
    for dtype in ("float32", "bfloat16"):
        peak, bandwidth = run.matmul_peak(dtype), run.matvec_bandwidth(dtype)
        if peak or bandwidth:
            lines.append(f"- in-run references, {dtype}: matmul peak "
                         f"{number(peak / 1e9) + ' GFLOP/s' if peak else '-'}, matrix-vector bandwidth "
                         f"{number(bandwidth / 1e9) + ' GB/s' if bandwidth else '-'}")
    lines += ["", "## Genesis against its peers (same run)", ""]
    lines += table(["group", "implementation", "rate", "ms", "speed vs peers (peer rate); references"],
                   comparison_rows(run))
    lines += ["", "## Targets", ""]
    lines += table(["what", "target", "measured", "status"],
                   [[t.what, t.goal, *t.evaluate(run)] for t in run_targets(run)])
    return "\n".join(lines)


# -- finding the run ----------------------------------------------------------------------------------------------
def latest_saved_run() -> Path:
    """The newest run saved under benchmarks/baselines/<this device>/ by `--benchmark-save`."""
    sys.path.insert(0, str(BENCHMARKS_DIR.parent))
    from benchmarks.workloads import device_name, device_slug

    device = device_name()
    folder = BENCHMARKS_DIR / "baselines" / device_slug(device)
    saved = sorted(folder.glob("*/[0-9][0-9][0-9][0-9]_*.json"), key=lambda path: path.name)
    if not saved:
        raise SystemExit(f"report.py: no saved run for {device!r} in {folder}; pass a JSON file "
                         "(pytest benchmarks/ --benchmark-json=run.json) or record one with --benchmark-save=NAME")
    return saved[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="?", type=Path, help="pytest-benchmark JSON (default: the latest saved run "
                        "of this device)")
    parser.add_argument("--stat", choices=list(STATS), default="min", help="round statistic rates are computed from")
    args = parser.parse_args(argv)
    path = args.json or latest_saved_run()
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        parser.error(f"{path}: {error.strerror}")
    except json.JSONDecodeError as error:
        parser.error(f"{path}: not JSON ({error.msg} at line {error.lineno})")
    if not isinstance(data, dict) or "benchmarks" not in data:
        parser.error(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    try:
        shown = path.resolve().relative_to(Path.cwd())
    except ValueError:
        shown = path
    print(report(Run(data, args.stat), str(shown), args.stat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
