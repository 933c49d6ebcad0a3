"""genesis-kernels verify and bench on the CPU."""

import pytest
import torch

from genesis_kernels import cli, verify


def table_rows(text: str) -> list[dict[str, str]]:
    """The rows of a fixed-width table (a header line, then a line of dashes under each column), each a dict keyed
    by the header's names; other lines before and after are ignored."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("---"))
    spans, start = [], 0
    for dashes in lines[rule].split("  "):
        spans.append((start, start + len(dashes)))
        start += len(dashes) + 2
    names = [lines[rule - 1][a:b].strip() for a, b in spans]
    rows = []
    for line in lines[rule + 1:]:
        if not line.strip() or line.startswith(" ") or len(line) < spans[-1][0]:
            break
        rows.append({name: line[a:b].strip() if (a, b) != spans[-1] else line[a:].strip()
                     for name, (a, b) in zip(names, spans)})
    return rows


def test_verify_runs_every_backend_and_passes(capsys):
    assert cli.main(["verify", "--device", "cpu", "--dtypes", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "backends: triton, torch" in out
    ops = ("flash_attention", "swiglu", "residual_norm", "matvec", "residual_norm_matvec", "decode_attention")
    table = table_rows(out)
    assert {row["op"] for row in table} == set(ops)
    assert {row["backend"] for row in table} == {"triton", "torch"}
    assert all(row["result"] == "pass" for row in table)
    assert f"{len(table)} passed, 0 failed, 0 skipped" in out


def test_verify_checks_the_autocast_dtype_mix(monkeypatch, capsys):
    monkeypatch.setattr(verify, "ATTENTION_CASES", [])
    monkeypatch.setattr(verify, "SWIGLU_SHAPES", [])
    assert cli.main(["verify", "--device", "cpu", "--dtypes", "fp16"]) == 0
    mixed = [row for row in table_rows(capsys.readouterr().out) if "x,w:fp32" in row["case"]]
    assert len(mixed) == 2 * len(verify.NORM_SHAPES)  # each backend, each shape
    dtype_backend_result = {(row["dtype"], row["backend"], row["result"]) for row in mixed}
    assert dtype_backend_result == {("float16", "triton", "pass"), ("float16", "torch", "pass")}


def test_verify_fails_with_a_nonzero_exit(monkeypatch, capsys):
    monkeypatch.setitem(verify.VERIFY_TOLERANCES, torch.float32, (0.0, 0.0))
    monkeypatch.setattr(verify, "ATTENTION_CASES", verify.ATTENTION_CASES[:1])
    assert cli.main(["verify", "--device", "cpu", "--dtypes", "fp32", "--backend", "torch"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_verify_skips_what_a_backend_refuses(monkeypatch, capsys):
    monkeypatch.setattr(verify, "ATTENTION_CASES", verify.ATTENTION_CASES[:1])
    monkeypatch.setattr(verify, "SWIGLU_SHAPES", [])
    monkeypatch.setattr(verify, "NORM_SHAPES", [])
    assert cli.main(["verify", "--device", "cpu", "--dtypes", "bf16", "--backend", "triton"]) == 0
    assert "skipped: the Triton interpreter computes bfloat16 dots wrongly" in capsys.readouterr().out


def test_bad_backend_name_is_a_clean_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["verify", "--backend", "cuda"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'cuda'" in capsys.readouterr().err


def test_bad_dtype_is_a_clean_error():
    with pytest.raises(SystemExit, match="--dtypes: 'fp8' is not one of fp32, fp16, bf16"):
        cli.main(["verify", "--device", "cpu", "--dtypes", "fp8"])


def test_bench_on_cpu_times_only_non_interpreter_backends(capsys):
    assert cli.main(["bench", "--device", "cpu", "--seq-lens", "32,64", "--tokens", "64", "--heads", "2",
                     "--head-dim", "16", "--reps", "1", "--swiglu-width", "16", "--norm-width", "16"]) == 0
    out = capsys.readouterr().out
    assert "only the non-interpreter backends are timed" in out
    rows = table_rows(out)
    providers = {(row["op"], row["provider"]) for row in rows}
    assert providers == {("attention", "sdpa"), ("attention", "naive"), ("swiglu", "torch"),
                         ("residual_norm", "torch")}
    assert {int(row["seq/rows"]) for row in rows if row["op"] == "attention"} == {32, 64}
    assert all(row["throughput"].endswith("TFLOP/s" if row["op"] == "attention" else "GB/s") for row in rows)


def test_verify_says_which_backends_it_did_not_check(monkeypatch, capsys):
    """Without the interpreter a CPU cannot run the Triton kernels: verify passes what it checked and says so."""
    reason = ("CPU tensors run the Triton kernels only under the interpreter: set TRITON_INTERPRET=1 before "
              "importing genesis_kernels")
    monkeypatch.setattr("genesis_kernels.dispatch._device_reason", lambda device: reason)
    monkeypatch.setattr(verify, "ATTENTION_CASES", verify.ATTENTION_CASES[:1])
    assert cli.main(["verify", "--device", "cpu", "--dtypes", "fp32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "backends: torch" in lines[0]
    assert lines[1] == f"not checked: triton ({reason})"
    assert lines[-1].endswith(f"passed, 0 failed, 0 skipped; not checked: triton ({reason})")
