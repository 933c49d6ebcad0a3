"""Which backend serves a call, and the public ops that route to it.

Backends:
- ``"triton"``: the kernels in :mod:`genesis_kernels.kernels`, compiled for CUDA tensors, or run by the Triton
  interpreter on CPU tensors when ``TRITON_INTERPRET=1`` was set before the kernels were imported.
- ``"torch"``: :mod:`genesis_kernels.fallback` (SDPA and eager ops), which serves every call.

``backend=None`` reads ``GENESIS_KERNELS_BACKEND`` (auto | triton | torch, default auto). ``auto`` takes the
Triton path when it can serve the call and is the faster one on that GPU family (:data:`AUTO_PREFERENCE`),
and the torch path otherwise. While ``torch.compile`` traces, ``auto`` takes the torch path for the training ops
(Inductor fuses the eager ops itself and keeps the graph whole, which their autograd Functions would break), but
not for the decoding ops on CUDA (:data:`COMPILABLE_OPS`): those kernels are ``torch.library.triton_op``s, which
Inductor keeps in its graph and a CUDA graph replays. Forcing ``triton`` where it cannot serve the call raises
:class:`BackendError`.

:func:`prefer` sets ``auto``'s choice for some ops for the length of a ``with`` block, in place of
:data:`AUTO_PREFERENCE` (to measure one op on the other path, say): ``with prefer({"matvec": "torch"}): ...``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Callable, Iterator, Mapping

import torch

from . import fallback
from .device import compute_capability, gpu_family

BACKEND_ENV = "GENESIS_KERNELS_BACKEND"
BACKENDS = ("triton", "torch")
_REQUESTS = ("auto",) + BACKENDS
# The ops this module routes, by the names select_backend, AUTO_PREFERENCE and prefer() know them by.
OPS = ("flash_attention", "swiglu", "residual_norm", "matvec", "residual_norm_matvec", "decode_attention")

# The Triton kernels keep a whole row (residual_norm) in registers: wider rows go to the fallback.
MAX_NORM_WIDTH = 16384
MAX_ATTENTION_HEAD_DIM = 128
_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# auto's choice where both backends can serve a call, by op and GPU family; unlisted pairs (unmeasured) take Triton.
# Hopper: the torch path measured faster per training op on an H200; the decoding ops keep Triton (fewer kernels a
# layer). Figures: benchmarks/RESULTS.md, "Where the shipped constants come from".
AUTO_PREFERENCE = {
    ("flash_attention", "sm_90"): "torch",
    ("residual_norm", "sm_90"): "torch",
    ("swiglu", "sm_90"): "torch",
}


# Ops whose Triton kernels torch.compile keeps in its graph (torch.library.triton_op): auto may pick them while
# compiling, on these device types (the interpreter's CPU path is not one: Inductor's CPU code cannot call it).
COMPILABLE_OPS = ("matvec", "residual_norm_matvec", "decode_attention")
COMPILABLE_DEVICE_TYPES = ("cuda",)

# prefer()'s choices by op, consulted before AUTO_PREFERENCE; empty outside a prefer() block.
_PREFERRED: dict[str, str] = {}


class BackendError(RuntimeError):
    """A backend was forced that cannot serve the call."""


@functools.cache
def _triton_state() -> tuple[str | None, bool]:
    """(why Triton cannot run at all or None, whether the kernels were built for the interpreter)."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return "Triton is not installed (pip install 'genesis-kernels[triton]')", False

    # triton.jit reads TRITON_INTERPRET when a kernel is defined, so the kernels themselves say which they are.
    from .kernels.swiglu import swiglu_forward_kernel
    return None, isinstance(swiglu_forward_kernel, InterpretedFunction)


# Asked while torch.compile traces too (the decoding ops dispatch inside a compiled step): answered once at trace
# time, a constant of the graph (as genesis_kernels.device's checks are).
@torch.compiler.assume_constant_result
def _device_reason(device: torch.device) -> str | None:
    """Why the Triton backend cannot run on ``device``, or None."""
    missing, interpreted = _triton_state()
    if missing:
        return missing
    if device.type == "cpu":
        if not interpreted:
            return "CPU tensors run the Triton kernels only under the interpreter: set TRITON_INTERPRET=1 " \
                   "before importing genesis_kernels"
        return None
    if device.type == "cuda":
        if interpreted:
            return "TRITON_INTERPRET=1 built the kernels for the interpreter: unset it to run them on CUDA"
        major, minor = compute_capability(device)
        if (major, minor) < (7, 5):
            return f"the Triton kernels need compute capability 7.5 or newer, this GPU is sm_{major}{minor}"
        return None
    return f"the Triton kernels do not run on {device.type} tensors"


def _dtype_reason(dtype: torch.dtype, device: torch.device, arithmetic_in_dtype: bool) -> str | None:
    """Why the kernels cannot take ``dtype`` on ``device``; ``arithmetic_in_dtype`` marks kernels that multiply
    in the input dtype (tensor-core dots) rather than upcasting to fp32 after the load."""
    if dtype not in _KERNEL_DTYPES:
        return f"dtype {dtype} is not one of float16, bfloat16, float32"
    if dtype == torch.bfloat16 and arithmetic_in_dtype:
        if device.type == "cpu":
            return "the Triton interpreter computes bfloat16 dots wrongly: use float16/float32 on the CPU"
        if gpu_family(device) == "sm_75":
            return "sm_75 (Turing) has no bfloat16 tensor cores: use float16, or backend='torch'"
    return None


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Backends that can run on ``device`` (default: the current CUDA device if any, else the CPU)."""
    return [name for name in ("triton", "torch") if name not in unavailable_backends(device)]


def unavailable_backends(device: torch.device | str | None = None) -> dict[str, str]:
    """The backends that cannot run on ``device``, each with the reason (and how to make it run where one can)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    reason = _device_reason(torch.device(device))
    return {"triton": reason} if reason else {}


def _requested_backend(backend: str | None) -> str:
    if backend is None:
        backend = os.environ.get(BACKEND_ENV, "auto")
        if backend not in _REQUESTS:
            raise ValueError(f"{BACKEND_ENV}={backend!r} is not one of {', '.join(_REQUESTS)}: "
                             "set it to one of them or unset it")
    elif backend not in _REQUESTS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(_REQUESTS)} (or None for "
                         f"${BACKEND_ENV})")
    return backend


@contextlib.contextmanager
def prefer(op_backends: Mapping[str, str]) -> Iterator[None]:
    """Within the block, ``auto`` picks ``op_backends[op]`` ("triton" or "torch") for each op named, on every
    device, in place of :data:`AUTO_PREFERENCE`; the earlier choices come back when the block ends, however it ends.
    Blocks nest (the inner one wins for the ops it names).

    Only ``auto`` follows it: a ``backend=`` argument or ``GENESIS_KERNELS_BACKEND`` still wins, a call Triton cannot
    serve still takes the torch path, and while ``torch.compile`` traces the training ops still take the torch path.
    The setting is the process's, not the thread's. Code compiled before the block may keep the choice it was traced
    with: ``torch._dynamo.reset()`` inside the block traces it afresh.

    Raises ValueError, changing nothing, if an op is not one of :data:`OPS` or a backend not one of
    :data:`BACKENDS`.
    """
    for op, backend in op_backends.items():
        if op not in OPS:
            raise ValueError(f"prefer: op {op!r} is not one of {', '.join(OPS)}")
        if backend not in BACKENDS:
            raise ValueError(f"prefer: backend {backend!r} for {op} is not one of {', '.join(BACKENDS)} "
                             "(auto's choice is what prefer sets)")
    saved = dict(_PREFERRED)
    _PREFERRED.update(op_backends)
    try:
        yield
    finally:
        _PREFERRED.clear()
        _PREFERRED.update(saved)


def select_backend(op: str, backend: str | None, device: torch.device,
                   case_reason: Callable[[], str | None]) -> str:
    """The backend that runs ``op``; ``case_reason`` says why Triton cannot serve this particular call."""
    requested = _requested_backend(backend)
    if requested == "torch":
        return "torch"
    if requested == "auto" and torch.compiler.is_compiling() and not (
            op in COMPILABLE_OPS and device.type in COMPILABLE_DEVICE_TYPES):
        return "torch"
    reason = _device_reason(device) or case_reason()
    if requested == "triton":
        if reason is not None:
            raise BackendError(f"{op}: backend 'triton' cannot serve this call: {reason}")
        return "triton"
    if reason is not None:
        return "torch"
    if op in _PREFERRED:
        return _PREFERRED[op]
    return AUTO_PREFERENCE.get((op, gpu_family(device)), "triton")


def _attention_reason(q: torch.Tensor) -> str | None:
    if q.shape[-1] > MAX_ATTENTION_HEAD_DIM:
        return f"head_dim {q.shape[-1]} is above {MAX_ATTENTION_HEAD_DIM}"
    device_type = q.device.type
    # Under autocast the kernels see autocast's dtype, as SDPA would.
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else q.dtype
    return _dtype_reason(dtype, q.device, arithmetic_in_dtype=True)


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                    softmax_scale: float | None = None, *, backend: str | None = None) -> torch.Tensor:
    """softmax(q k^T * scale [+ causal mask]) v on (batch, heads, seq, head_dim) tensors.

    k and v may have fewer heads than q (grouped-query attention). With ``causal`` and fewer queries than
    keys, the queries are the last ones: query i sees key j iff j <= i + (k_len - q_len).
    ``softmax_scale`` defaults to head_dim ** -0.5.
    """
    if select_backend("flash_attention", backend, q.device, lambda: _attention_reason(q)) == "torch":
        return fallback.attention(q, k, v, causal, softmax_scale)
    from .kernels.flash_attention import flash_attention_triton
    return flash_attention_triton(q, k, v, causal, softmax_scale)


def swiglu(gate: torch.Tensor, up: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """silu(gate) * up over any leading dims; gate and up may be strided views (halves of one projection)."""
    def case_reason():
        if gate.shape != up.shape or gate.dtype != up.dtype:
            return f"gate {tuple(gate.shape)} {gate.dtype} and up {tuple(up.shape)} {up.dtype} differ " \
                   "(the kernel does not broadcast or promote)"
        return _dtype_reason(gate.dtype, gate.device, arithmetic_in_dtype=False)

    if select_backend("swiglu", backend, gate.device, case_reason) == "torch":
        return fallback.swiglu(gate, up)
    from .kernels.swiglu import swiglu_triton
    return swiglu_triton(gate, up)


def residual_norm(x: torch.Tensor, fx: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  alpha: float = 1.0, eps: float = 1e-6, norm: str = "rms", *,
                  backend: str | None = None) -> torch.Tensor:
    """Norm(alpha * x + fx) over the last dim (RMSNorm, or LayerNorm with ``norm="layer"``).

    x, fx, weight and bias may differ in dtype (under autocast x is typically fp32 and fx half); the result has
    ``torch.result_type(x, fx)``, the dtype of eager ``alpha * x + fx``.
    """
    def case_reason():
        if x.shape != fx.shape:
            return f"x {tuple(x.shape)} and fx {tuple(fx.shape)} differ in shape (the kernel does not broadcast)"
        if x.shape[-1] > MAX_NORM_WIDTH:
            return f"width {x.shape[-1]} is above {MAX_NORM_WIDTH}"
        for tensor in (x, fx, weight, bias):
            if tensor is not None and (reason := _dtype_reason(tensor.dtype, x.device, arithmetic_in_dtype=False)):
                return reason
        return None

    if norm not in ("rms", "layer"):
        raise ValueError(f"residual_norm: norm={norm!r} is not one of 'rms', 'layer'")
    if select_backend("residual_norm", backend, x.device, case_reason) == "torch":
        return fallback.residual_norm(x, fx, weight, bias, alpha, eps, norm)
    from .kernels.residual_norm import residual_norm_triton
    return residual_norm_triton(x, fx, weight, bias, alpha, eps, norm)


def matvec(x: torch.Tensor, weight: torch.Tensor, *, gated: bool = False, backend: str | None = None) -> torch.Tensor:
    """x @ weight.T for x of shape (..., K) holding one row and weight (N, K): the projections of batch-1 decoding.
    ``gated``: x is (..., 2K), a SwiGLU MLP's [gate, up], and the product is of silu(gate) * up (the down
    projection with its activation fused into the Triton kernel's loads).
    Inference only: the Triton kernel has no backward, so a call that needs gradients takes the torch path."""
    def case_reason():
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            return "the kernel has no backward (inference only)"
        width = weight.shape[-1] * (2 if gated else 1)
        if weight.dim() != 2 or x.shape[-1] != width or x.numel() != x.shape[-1]:
            return f"x {tuple(x.shape)} is not one row of width {width} for weight {tuple(weight.shape)}"
        if torch.is_autocast_enabled(x.device.type):
            return "autocast is on (F.linear follows its dtype rules)"
        if x.dtype != weight.dtype:
            return f"x {x.dtype} and weight {weight.dtype} differ"
        return _dtype_reason(x.dtype, x.device, arithmetic_in_dtype=False)

    if select_backend("matvec", backend, x.device, case_reason) == "torch":
        return fallback.matvec(x, weight, gated)
    from .kernels.matvec import matvec_triton
    return matvec_triton(x, weight, gated)


def residual_norm_matvec(x: torch.Tensor, fx: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor,
                         alpha: float = 1.0, eps: float = 1e-6, *,
                         backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepNorm's residual norm of one row and the projection that reads it: h = RMSNorm(alpha * x + fx) *
    norm_weight and y = h @ weight.T, returned as (h, y); x, fx: (..., K) holding one row, weight (N, K).
    The Triton kernel (matvec's, with a prologue) computes h as it loads the row: one launch for both."""
    def case_reason():
        if torch.is_grad_enabled() and any(t.requires_grad for t in (x, fx, norm_weight, weight)):
            return "the kernel has no backward (inference only)"
        if weight.dim() != 2 or fx.shape[-1] != weight.shape[-1] or fx.numel() != fx.shape[-1] \
                or x.shape != fx.shape or norm_weight.shape != (fx.shape[-1],):
            return f"x {tuple(x.shape)}, fx {tuple(fx.shape)}, norm_weight {tuple(norm_weight.shape)} are not one " \
                   f"row and its norm weight for weight {tuple(weight.shape)}"
        if torch.is_autocast_enabled(fx.device.type):
            return "autocast is on (F.linear follows its dtype rules)"
        if not x.dtype == fx.dtype == norm_weight.dtype == weight.dtype:
            return f"x {x.dtype}, fx {fx.dtype}, norm_weight {norm_weight.dtype} and weight {weight.dtype} differ"
        return _dtype_reason(fx.dtype, fx.device, arithmetic_in_dtype=False)

    if select_backend("residual_norm_matvec", backend, fx.device, case_reason) == "torch":
        return fallback.residual_norm_matvec(x, fx, norm_weight, weight, alpha, eps)
    from .kernels.matvec import residual_norm_matvec_triton
    return residual_norm_matvec_triton(x, fx, norm_weight, weight, alpha, eps)


def decode_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor,
                     values: torch.Tensor, mask: torch.Tensor, slots: torch.Tensor,
                     softmax_scale: float | None = None, *, backend: str | None = None) -> torch.Tensor:
    """New tokens' attention through a static key/value cache, the cache written in place: returns (B, T, H, D).

    qkv: (B, T, H + 2K, D), the fused projection's queries, keys and values (H a multiple of K), RoPE not yet
    applied; cos, sin: (B, T, D) rotary tables at each new token's position, sin's first half negated (see
    :func:`genesis_kernels.fallback.apply_rotary`); keys, values: the (B, K, S, D) cache, written at ``slots``;
    mask: (B, T, S) bool, True where a new token may see a slot; slots: (T,) consecutive integer slots on the
    device, every slot below them already filled (the Triton kernel scans only those, so one compiled step serves
    every position). The backend choice applies to steps of one token a row (T == 1, inference), which the Triton
    kernel serves in one launch; prompts (T > 1) always take the torch path (SDPA).
    """
    def case_reason():
        if torch.is_grad_enabled() and any(t.requires_grad for t in (qkv, keys, values)):
            return "the kernel has no backward (inference only)"
        if qkv.dtype != keys.dtype or keys.dtype != values.dtype:
            return f"qkv {qkv.dtype}, keys {keys.dtype} and values {values.dtype} differ"
        if torch.is_autocast_enabled(qkv.device.type):
            return "autocast is on (SDPA follows its dtype rules)"
        if any(t.stride(-1) != 1 for t in (keys, values, mask, cos, sin)):
            return "keys, values, mask, cos and sin need a unit stride in their last dim"
        if qkv.shape[-1] > MAX_ATTENTION_HEAD_DIM:
            return f"head_dim {qkv.shape[-1]} is above {MAX_ATTENTION_HEAD_DIM}"
        # The kernel computes in fp32 after its loads (no tensor-core dots): bf16 runs everywhere.
        return _dtype_reason(qkv.dtype, qkv.device, arithmetic_in_dtype=False)

    if qkv.shape[1] != 1 or select_backend("decode_attention", backend, qkv.device, case_reason) == "torch":
        return fallback.decode_attention(qkv, cos, sin, keys, values, mask, slots, softmax_scale)
    from .kernels.decode_attention import decode_attention_triton
    # The kernel wants each row's heads back to back: a strided qkv (never the model's) is copied.
    qkv = qkv if qkv.stride(-1) == 1 and qkv.stride(-2) == qkv.shape[-1] else qkv.contiguous()
    return decode_attention_triton(qkv, cos, sin, keys, values, mask, slots, softmax_scale)
