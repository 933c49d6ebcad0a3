"""Summarize a benchmark run: Genesis / peer per group, the training step against the in-run matmul peak, decoding
against the in-run bandwidth limit, and issue 7's targets marked met or not met.

    python benchmarks/report.py                 # the latest run saved for this device (benchmarks/baselines/)
    python benchmarks/report.py run.json        # a run written by `pytest benchmarks/ --benchmark-json=run.json`
    python benchmarks/report.py --stat median   # rates from the median round instead of the fastest

Every rate is work / time for one timed call, with the work taken from the test's `extra_info` (tokens, FLOPs or
bytes) and the time from the chosen statistic of its rounds (default: the fastest round, the least disturbed by
other load on a shared machine; both sides of a ratio use the same statistic). Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


def attention_targets(run: Run) -> list[Target]:
    """Per measured sequence length: the CPU fallback's overhead over SDPA, or on CUDA the Triton kernel against
    SDPA's flash and default backends (issue 4, from S = 1024); plus the ratio to naive attention."""
    targets = []
    cuda = run.machine.get("device_type") == "cuda"
    for group in run.groups():
        if not group.startswith("attention_"):
            continue
        _, pass_, seq = group.split("_")
        label = f"attention {pass_}, S={seq}"
        if cuda:
            if int(seq) >= 1024:
                default_goal = 0.8 if pass_ == "fwd" else 0.7
                targets += [
                    Target(label, "triton >= 1.1x SDPA flash backend",
                           lambda r, g=group: r.ratio(g, "genesis-triton", g, "sdpa-flash"), 1.1),
                    Target(label, f"triton >= {default_goal}x SDPA default",
                           lambda r, g=group: r.ratio(g, "genesis-triton", g, "sdpa"), default_goal),
                ]
        else:
            targets.append(Target(label, "fallback within 5% of SDPA (>= 0.95x)",
                                  lambda r, g=group: r.ratio(g, "genesis-torch", g, "sdpa"), 0.95))
        best = "genesis-triton" if cuda else "genesis-torch"
        targets.append(Target(label, "vs naive softmax(QK^T)V", lambda r, g=group, b=best: r.ratio(g, b, g, "naive"),
                              None))
    return targets


def fused_op_targets(run: Run) -> list[Target]:
    """SwiGLU and the residual norm: every Genesis backend no slower than eager; on CUDA the residual norm at
    >= 60% of the device copy bandwidth (issue 4)."""
    targets = []
    for group in run.groups():
        if not group.startswith(("swiglu", "residual_norm")):
            continue
        for impl in run.impls(group):
            if impl.startswith("genesis"):
                targets.append(Target(f"{group} ({impl})", "no slower than eager (>= 1.0x)",
                                      lambda r, g=group, i=impl: r.ratio(g, i, g, "eager"), 1.0))
                if group.startswith("residual_norm") and run.get("bandwidth", "copy-bfloat16"):
                    targets.append(Target(f"{group} ({impl})", ">= 60% of the device copy bandwidth",
                                          lambda r, g=group, i=impl: r.ratio(g, i, "bandwidth", "copy-bfloat16"),
                                          0.6, unit="%"))
    return targets


def model_targets() -> list[Target]:
    """Issue 7's training-step and decoding targets on the CPU shapes (on a GPU these groups measure launch
    overhead: reported, not judged), and issue 5's GPU decoding target."""
    cpu_targets = [
        Target("train step fp32 eager, tiny", "genesis >= 1.0x HF",
               lambda r: r.ratio("train_step_tiny", "genesis", "train_step_tiny", "hf"), 1.0),
        Target("train step fp32 eager, small", "genesis >= 1.0x HF",
               lambda r: r.ratio("train_step_small", "genesis", "train_step_small", "hf"), 1.0),
        Target("train step fp32 compiled, tiny", "genesis >= 1.1x HF (both compiled)",
               lambda r: r.ratio("train_step_compiled_tiny", "genesis", "train_step_compiled_tiny", "hf"), 1.1),
        Target("train step fp32 compiled, small", "genesis >= 1.1x HF (both compiled)",
               lambda r: r.ratio("train_step_compiled_small", "genesis", "train_step_compiled_small", "hf"), 1.1),
        Target("train step fp32 compiled, small", ">= 80% of the in-run matmul peak",
               lambda r: r.fraction_of_peak("train_step_compiled_small"), 0.8, unit="%"),
        # Floors (test_train_step_floor, test_decode_floor): the products alone, back to back. A floor below a
        # target means no implementation built on these kernels can meet it on this device.
        Target("floor, small: its products alone", "fraction of the matmul peak (bounds the 80% target)",
               lambda r: r.fraction_of_peak("train_step_small", "floor"), None, unit="%"),
        Target("train step bf16 autocast, tiny", ">= 1.4x genesis fp32 eager",
               lambda r: r.ratio("train_step_bf16_tiny", "genesis", "train_step_tiny", "genesis"), 1.4),
        # Decoding: eager `generate` and `generate(compile=True)` (genesis-compiled) are both reported against
        # HF's default `generate`; on a GPU the compiled one also against HF's compiled static cache.
        *[Target(f"decode fp32, {preset} ({impl})", f"{impl} >= {goal}x HF generate",
                 lambda r, g=f"decode_{preset}", i=impl: r.ratio(g, i, g, "hf"), goal)
          for preset, goal in (("tiny", 1.3), ("small", 1.1)) for impl in ("genesis", "genesis-compiled")],
        *[Target(f"decode fp32, {preset} ({impl})", ">= 80% of the in-run bandwidth limit",
                 lambda r, g=f"decode_{preset}", i=impl: r.fraction_of_bandwidth_limit(g, i), 0.8, unit="%")
          for preset in ("tiny", "small") for impl in ("genesis", "genesis-compiled", "floor")],
        *[Target(f"decode bf16 weights, tiny ({impl})", f"{impl} >= 2x HF fp32 generate",
                 lambda r, i=impl: r.ratio("decode_bf16_tiny", i, "decode_tiny", "hf"), 2.0)
          for impl in ("genesis", "genesis-compiled", "floor")],
    ]
    for target in cpu_targets:
        target.device = "cpu"
    return cpu_targets + [
        # genesis-compiled-torch: the product's peer (the decoding ops on the torch path), reported beside it.
        *[Target(f"decode bf16, deep_narrow_40 ({impl})", ">= 3x HF static cache compiled",
                 lambda r, i=impl: r.ratio("decode_bf16_deep_narrow_40", i, "decode_bf16_deep_narrow_40",
                                           "hf-static-compiled"), 3.0, device="cuda")
          for impl in ("genesis-compiled", "genesis-compiled-torch")],
    ]


def data_targets() -> list[Target]:
    def millions_per_second(group):
        return lambda r: r.rate(group, "genesis") / 1e6 if r.rate(group, "genesis") else None

    return [
        Target("tokenizer encode, one translation", ">= 1M tokens/s", millions_per_second("tokenizer_encode"), 1.0,
               unit="M tokens/s"),
        Target("multi-task sampler, one process", ">= 1M tokens/s", millions_per_second("sampler"), 1.0,
               unit="M tokens/s"),
    ]


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
    targets = model_targets() + attention_targets(run) + fused_op_targets(run) + data_targets()
    lines += ["", "## Targets (issue 7)", ""]
    lines += table(["what", "target", "measured", "status"],
                   [[t.what, t.goal, *t.evaluate(run)] for t in targets])
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
