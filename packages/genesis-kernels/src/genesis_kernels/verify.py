"""``genesis-kernels verify``: every available backend, forward and gradients, against the float64 references of
:mod:`genesis_kernels.reference` over a grid of shapes and dtypes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from . import reference
from .device import gpu_family
from .dispatch import (BackendError, decode_attention, flash_attention, matvec, residual_norm, residual_norm_matvec,
                       swiglu, unavailable_backends)

# (atol, rtol) for the forward and for every input gradient, per dtype, on O(1) inputs.
VERIFY_TOLERANCES = {
    torch.float32: (1e-4, 1e-4),  # TF32 is switched off while verifying
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (6e-2, 6e-2),
}

# batch, heads, kv_heads, q_len, k_len, head_dim, causal
ATTENTION_CASES = [
    (1, 2, 2, 1, 1, 16, True),
    (2, 2, 2, 7, 7, 48, True),
    (1, 2, 2, 77, 77, 80, False),
    (1, 4, 2, 77, 77, 96, True),
    (1, 4, 1, 40, 40, 128, True),
    (2, 4, 2, 7, 77, 64, True),
]
GPU_ATTENTION_CASES = [
    (1, 4, 4, 1000, 1000, 64, True),
    (2, 8, 2, 4096, 4096, 64, True),
    (1, 4, 4, 4096, 4096, 128, False),
]
SWIGLU_SHAPES = [(7,), (2, 7, 48), (3, 1500)]
GPU_SWIGLU_SHAPES = [(16384, 2048)]
NORM_SHAPES = [(7, 48), (2, 7, 77), (3, 768)]
GPU_NORM_SHAPES = [(16384, 768)]
# The decoding ops (forward only: inference kernels). matvec: (x's shape, weight rows); K above one tile loops.
MATVEC_CASES = [((1, 48), 77), ((1, 1, 5000), 7)]
GPU_MATVEC_CASES = [((1, 1, 768), 2304), ((1, 1, 2048), 768)]  # deep_narrow_40's qkv and down projections
# gated: x holds [gate, up] of twice the weight's width. Weights are scaled by width^-0.5, as a model's are, so that
# outputs are O(1) and the absolute tolerance means what it does elsewhere: the gated and normalized rows are rounded
# to the input dtype before their product on both backends (as the model's activations are), an error that grows
# with the outputs' scale (unscaled, on an H200, bf16 outputs of scale ~45 missed atol by 0.2-0.6 on both backends).
# batch, heads, kv_heads, cache slots, the slot written, head_dim, left padding of the last row
DECODE_ATTENTION_CASES = [(2, 4, 2, 77, 50, 48, 9), (1, 2, 2, 16, 0, 16, 0)]
GPU_DECODE_ATTENTION_CASES = [(1, 12, 12, 256, 160, 64, 0), (4, 12, 4, 1024, 700, 128, 300)]


@dataclass
class Check:
    op: str
    case: str
    dtype: torch.dtype
    backend: str
    forward_error: float = float("nan")
    gradient_error: float = float("nan")
    status: str = ""


def _max_error_and_ok(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> tuple[float, bool]:
    """The largest absolute error, and whether every element is within atol + rtol * |expected|."""
    error = (actual.double() - expected).abs()
    return error.max().item(), bool((error <= atol + rtol * expected.abs()).all())


def _compare(check: Check, run: Callable[..., torch.Tensor], inputs: list[torch.Tensor],
             expect: Callable[..., torch.Tensor]) -> Check:
    """Run ``run`` on ``inputs`` and ``expect`` on float64 copies; compare the output and every gradient."""
    atol, rtol = VERIFY_TOLERANCES[check.dtype]
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    try:
        out = run(*leaves)
    except BackendError as error:
        check.status = f"skipped: {str(error).split(': ', 2)[-1]}"
        return check
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    leaves64 = [t.detach().double().requires_grad_() for t in inputs]
    expected = expect(*leaves64)
    expected.backward(grad_out.double())
    check.forward_error, forward_ok = _max_error_and_ok(out, expected, atol, rtol)
    gradients_ok = True
    check.gradient_error = 0.0
    for leaf, leaf64 in zip(leaves, leaves64):
        # Parameter gradients sum over rows: scale the absolute tolerance with their size.
        scale = max(1.0, leaf64.grad.abs().max().item())
        error, ok = _max_error_and_ok(leaf.grad, leaf64.grad, atol * scale, rtol)
        check.gradient_error = max(check.gradient_error, error)
        gradients_ok &= ok
    check.status = "pass" if forward_ok and gradients_ok else "FAIL"
    return check


def _flattened(outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat([out.flatten() for out in outputs])


def _attention_and_cache(out: torch.Tensor, args: list[torch.Tensor]) -> torch.Tensor:
    """decode_attention's output and the key/value cache it wrote (args 3 and 4), flattened into one tensor."""
    return torch.cat([out.flatten(), args[3].flatten(), args[4].flatten()])


def _compare_forward(check: Check, run: Callable[..., torch.Tensor], inputs: list[torch.Tensor],
                     expect: Callable[..., torch.Tensor]) -> Check:
    """``_compare`` for inference ops: the output only, ``expect`` on float64 copies of the float inputs."""
    atol, rtol = VERIFY_TOLERANCES[check.dtype]
    # Copied before the run: decode_attention writes its cache, and the reference must not start from that write.
    inputs64 = [t.double() if t.is_floating_point() else t for t in inputs]
    try:
        with torch.inference_mode():
            out = run(*inputs)
    except BackendError as error:
        check.status = f"skipped: {str(error).split(': ', 2)[-1]}"
        return check
    expected = expect(*inputs64)
    check.forward_error, forward_ok = _max_error_and_ok(out, expected, atol, rtol)
    check.status = "pass" if forward_ok else "FAIL"
    return check


def _verify_checks(device: torch.device, backends: list[str], dtypes: list[torch.dtype]) -> Iterator[Check]:
    """Each check as soon as it has run (on a GPU the first call of each case compiles its kernels)."""
    on_gpu = device.type == "cuda"
    gen = torch.Generator(device=device).manual_seed(0)

    def randn(*shape, dtype):
        return torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)

    for backend in backends:
        for dtype in dtypes:
            for shape in SWIGLU_SHAPES + (GPU_SWIGLU_SHAPES if on_gpu else []):
                yield _compare(
                    Check("swiglu", "x".join(map(str, shape)), dtype, backend),
                    lambda gate, up: swiglu(gate, up, backend=backend),
                    [randn(*shape, dtype=dtype), randn(*shape, dtype=dtype)], reference.swiglu)
            for shape in NORM_SHAPES + (GPU_NORM_SHAPES if on_gpu else []):
                for norm in ("rms", "layer"):
                    width = shape[-1]
                    inputs = [randn(*shape, dtype=dtype), randn(*shape, dtype=dtype),
                              1 + 0.5 * randn(width, dtype=dtype), 0.5 * randn(width, dtype=dtype)]
                    yield _compare(
                        Check("residual_norm", f"{'x'.join(map(str, shape))} {norm} alpha=2", dtype, backend),
                        lambda x, fx, w, b, norm=norm: residual_norm(x, fx, w, b, 2.0, norm=norm, backend=backend),
                        inputs, lambda x, fx, w, b, norm=norm: reference.residual_norm(x, fx, w, b, 2.0, norm=norm))
                if dtype != torch.float32:
                    # Autocast training's mix: an fp32 residual stream and norm weight around a half sublayer output.
                    inputs = [randn(*shape, dtype=torch.float32), randn(*shape, dtype=dtype),
                              1 + 0.5 * randn(shape[-1], dtype=torch.float32)]
                    yield _compare(
                        Check("residual_norm", f"{'x'.join(map(str, shape))} rms alpha=2 x,w:fp32", dtype, backend),
                        lambda x, fx, w: residual_norm(x, fx, w, None, 2.0, backend=backend),
                        inputs, lambda x, fx, w: reference.residual_norm(x, fx, w, None, 2.0))
            for x_shape, rows in MATVEC_CASES + (GPU_MATVEC_CASES if on_gpu else []):
                for gated in (False, True):
                    width = x_shape[-1] // 2 if gated else x_shape[-1]
                    yield _compare_forward(
                        Check("matvec", f"{'x'.join(map(str, x_shape))} @ {rows}x{width}{' gated' if gated else ''}",
                              dtype, backend),
                        lambda x, weight, gated=gated: matvec(x, weight, gated=gated, backend=backend),
                        [randn(*x_shape, dtype=dtype), randn(rows, width, dtype=dtype) * width ** -0.5],
                        lambda x, weight, gated=gated: reference.matvec(x, weight, gated))
            for x_shape, rows in MATVEC_CASES + (GPU_MATVEC_CASES if on_gpu else []):
                width = x_shape[-1]
                inputs = [randn(*x_shape, dtype=dtype), randn(*x_shape, dtype=dtype),
                          1 + 0.5 * randn(width, dtype=dtype), randn(rows, width, dtype=dtype) * width ** -0.5]
                yield _compare_forward(
                    Check("residual_norm_matvec", f"{'x'.join(map(str, x_shape))} @ {rows}x{width} alpha=2", dtype,
                          backend),
                    lambda *args: _flattened(residual_norm_matvec(*args, 2.0, backend=backend)), inputs,
                    lambda *args: _flattened(reference.residual_norm_matvec(*args, 2.0)))
            for batch, heads, kv_heads, slots, slot, head_dim, padding in \
                    DECODE_ATTENTION_CASES + (GPU_DECODE_ATTENTION_CASES if on_gpu else []):
                # One new token a row, written at `slot`, seeing the slots up to it past its row's left padding
                # (a query always sees its own slot). The written cache is compared too.
                cache_slots = torch.arange(slots, device=device)
                mask = ((cache_slots >= padding) | (cache_slots == slot)) & (cache_slots <= slot)
                mask = torch.stack([cache_slots <= slot] * (batch - 1) + [mask])[:, None]
                angles = randn(batch, 1, head_dim // 2, dtype=torch.float32)
                inputs = [randn(batch, 1, heads + 2 * kv_heads, head_dim, dtype=dtype),
                          torch.cat([angles.cos()] * 2, dim=-1), torch.cat([-angles.sin(), angles.sin()], dim=-1),
                          randn(batch, kv_heads, slots, head_dim, dtype=dtype),
                          randn(batch, kv_heads, slots, head_dim, dtype=dtype),
                          mask, torch.tensor([slot], device=device)]
                case = f"b{batch} h{heads}/{kv_heads} s{slot}/{slots} d{head_dim} pad{padding}"
                yield _compare_forward(
                    Check("decode_attention", case, dtype, backend),
                    lambda *args: _attention_and_cache(decode_attention(*args, backend=backend), args), inputs,
                    lambda *args: _attention_and_cache(reference.decode_attention(*args), args))
            # Last: on a GPU, compiling the flash attention kernels for every case takes the longest.
            for batch, heads, kv_heads, q_len, k_len, head_dim, causal in \
                    ATTENTION_CASES + (GPU_ATTENTION_CASES if on_gpu else []):
                inputs = [randn(batch, heads, q_len, head_dim, dtype=dtype),
                          randn(batch, kv_heads, k_len, head_dim, dtype=dtype),
                          randn(batch, kv_heads, k_len, head_dim, dtype=dtype)]
                case = f"b{batch} h{heads}/{kv_heads} q{q_len} k{k_len} d{head_dim}{' causal' if causal else ''}"
                yield _compare(
                    Check("flash_attention", case, dtype, backend),
                    lambda q, k, v: flash_attention(q, k, v, causal, backend=backend), inputs,
                    lambda q, k, v: reference.attention(q, k, v, causal))


# verify prints each check's row as soon as it has run: on a GPU compiling every case's kernels takes minutes, and a
# run cut short still shows what it checked.
_VERIFY_COLUMNS = [("op", 20), ("case", 30), ("dtype", 9), ("backend", 8), ("max err fwd", 12), ("max err grad", 12),
                   ("seconds", 8), ("result", 0)]


def _print_verify_row(cells: list[str]) -> None:
    print("  ".join(str(cell).ljust(width) for cell, (_, width) in zip(cells, _VERIFY_COLUMNS)).rstrip(), flush=True)


def _format_error(error: float) -> str:
    return "-" if error != error else f"{error:.2e}"  # NaN: the case was skipped


def run(device: torch.device, backends: list[str], dtypes: list[torch.dtype]) -> int:
    """Print the table; 1 if any check failed, else 0."""
    family = gpu_family(device) if device.type == "cuda" else "cpu"
    print(f"genesis-kernels verify on {device} ({family}), torch {torch.__version__}, backends: "
          f"{', '.join(backends)}")
    # A backend this device cannot run is not checked: said before the table and again under it.
    not_checked = [f"{name} ({reason})" for name, reason in unavailable_backends(device).items()]
    if not_checked:
        print(f"not checked: {'; '.join(not_checked)}")
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    _print_verify_row([name for name, _ in _VERIFY_COLUMNS])
    _print_verify_row(["-" * max(width, len(name)) for name, width in _VERIFY_COLUMNS])
    checks = []
    try:
        start = time.perf_counter()
        for check in _verify_checks(device, backends, dtypes):
            seconds, start = time.perf_counter() - start, time.perf_counter()
            checks.append(check)
            _print_verify_row([check.op, check.case, str(check.dtype).removeprefix("torch."), check.backend,
                               _format_error(check.forward_error), _format_error(check.gradient_error),
                               f"{seconds:.1f}", check.status])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    failures = sum(c.status == "FAIL" for c in checks)
    passed = sum(c.status == "pass" for c in checks)
    print(f"{passed} passed, {failures} failed, {len(checks) - passed - failures} skipped"
          + (f"; not checked: {'; '.join(not_checked)}" if not_checked else ""))
    return 1 if failures else 0
