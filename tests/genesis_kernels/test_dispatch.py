"""Backend selection: the environment variable, the argument, auto, and Triton's absence."""

import subprocess
import sys
import textwrap

import pytest
import torch

from genesis_kernels import (BackendError, available_backends, decode_attention, matvec, residual_norm,
                             residual_norm_matvec, swiglu)
from genesis_kernels import device as devices
from genesis_kernels import dispatch


def test_available_backends_on_cpu_under_the_interpreter():
    assert available_backends("cpu") == ["triton", "torch"]
    assert available_backends(torch.device("cpu")) == ["triton", "torch"]


@pytest.mark.parametrize("requested,expected", [("torch", "torch"), ("triton", "triton"), ("auto", "triton")])
def test_environment_variable_picks_the_backend(monkeypatch, requested, expected):
    monkeypatch.setenv(dispatch.BACKEND_ENV, requested)
    assert dispatch.select_backend("swiglu", None, torch.device("cpu"), lambda: None) == expected


def test_argument_overrides_the_environment(monkeypatch):
    monkeypatch.setenv(dispatch.BACKEND_ENV, "triton")
    assert dispatch.select_backend("swiglu", "torch", torch.device("cpu"), lambda: None) == "torch"


def test_auto_falls_back_where_triton_cannot_serve():
    assert dispatch.select_backend("op", "auto", torch.device("cpu"), lambda: "too wide") == "torch"
    with pytest.raises(BackendError, match="op: backend 'triton' cannot serve this call: too wide"):
        dispatch.select_backend("op", "triton", torch.device("cpu"), lambda: "too wide")


def test_auto_follows_the_preference_table(monkeypatch):
    monkeypatch.setitem(dispatch.AUTO_PREFERENCE, ("swiglu", "interpreter"), "torch")
    assert dispatch.select_backend("swiglu", "auto", torch.device("cpu"), lambda: None) == "torch"
    assert dispatch.select_backend("residual_norm", "auto", torch.device("cpu"), lambda: None) == "triton"


def test_prefer_sets_autos_choice_for_the_block(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setitem(dispatch.AUTO_PREFERENCE, ("residual_norm", "interpreter"), "torch")
    with dispatch.prefer({"swiglu": "torch", "residual_norm": "triton"}):
        assert dispatch.select_backend("swiglu", "auto", cpu, lambda: None) == "torch"
        assert dispatch.select_backend("residual_norm", "auto", cpu, lambda: None) == "triton"  # over the table
        assert dispatch.select_backend("matvec", "auto", cpu, lambda: None) == "triton"  # not named: unchanged
        # Only auto follows it, and a call Triton cannot serve still takes the torch path.
        assert dispatch.select_backend("swiglu", "triton", cpu, lambda: None) == "triton"
        assert dispatch.select_backend("residual_norm", "auto", cpu, lambda: "too wide") == "torch"
        x = torch.randn(3, 8)
        torch.testing.assert_close(swiglu(x, x), swiglu(x, x, backend="torch"))
        with dispatch.prefer({"swiglu": "triton"}):  # nested: the inner block wins, then the outer comes back
            assert dispatch.select_backend("swiglu", "auto", cpu, lambda: None) == "triton"
        assert dispatch.select_backend("swiglu", "auto", cpu, lambda: None) == "torch"
    assert dispatch.select_backend("swiglu", "auto", cpu, lambda: None) == "triton"
    assert dispatch.select_backend("residual_norm", "auto", cpu, lambda: None) == "torch"

    with pytest.raises(RuntimeError, match="inside"):
        with dispatch.prefer({"swiglu": "torch"}):
            raise RuntimeError("inside")
    assert dispatch.select_backend("swiglu", "auto", cpu, lambda: None) == "triton"


def test_prefer_refuses_bad_names():
    with pytest.raises(ValueError, match=r"prefer: op 'attention' is not one of flash_attention, swiglu, "):
        with dispatch.prefer({"attention": "torch"}):
            pass
    with pytest.raises(ValueError, match=r"prefer: backend 'auto' for matvec is not one of triton, torch"):
        with dispatch.prefer({"swiglu": "torch", "matvec": "auto"}):
            pass
    # Nothing was set by a refused block.
    assert dispatch.select_backend("swiglu", "auto", torch.device("cpu"), lambda: None) == "triton"


def test_bad_names_are_clean_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"backend='cuda' is not one of auto, triton, torch"):
        swiglu(torch.randn(2), torch.randn(2), backend="cuda")
    monkeypatch.setenv(dispatch.BACKEND_ENV, "fast")
    with pytest.raises(ValueError, match=r"GENESIS_KERNELS_BACKEND='fast' is not one of"):
        swiglu(torch.randn(2), torch.randn(2))


def test_unsupported_devices_are_refused():
    assert dispatch._device_reason(torch.device("meta")) == "the Triton kernels do not run on meta tensors"


def test_gpu_families(monkeypatch):
    for capability, family in [((7, 5), "sm_75"), ((8, 0), "sm_8x"), ((8, 9), "sm_8x"), ((9, 0), "sm_90")]:
        monkeypatch.setattr(devices, "compute_capability", lambda device, capability=capability: capability)
        assert devices.gpu_family(torch.device("cuda", 0)) == family
    assert devices.gpu_family(torch.device("cpu")) == "interpreter"


def test_bf16_refused_on_turing(monkeypatch):
    monkeypatch.setattr(devices, "compute_capability", lambda device: (7, 5))
    reason = dispatch._dtype_reason(torch.bfloat16, torch.device("cuda", 0), arithmetic_in_dtype=True)
    assert "sm_75 (Turing) has no bfloat16 tensor cores" in reason
    assert dispatch._dtype_reason(torch.float16, torch.device("cuda", 0), arithmetic_in_dtype=True) is None


def test_works_without_triton():
    # A fresh interpreter where `import triton` fails, as on an install without it.
    script = textwrap.dedent("""
        import sys
        sys.modules["triton"] = None
        import torch
        import genesis_kernels
        from genesis_kernels import flash_attention, swiglu, residual_norm, BackendError
        assert genesis_kernels.available_backends("cpu") == ["torch"], genesis_kernels.available_backends("cpu")
        q = torch.randn(1, 2, 5, 16)
        out = flash_attention(q, q, q)
        torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True))
        assert swiglu(q, q).shape == q.shape
        assert residual_norm(q, q, torch.ones(16)).shape == q.shape
        try:
            swiglu(q, q, backend="triton")
        except BackendError as error:
            print(error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "swiglu: backend 'triton' cannot serve this call: Triton is not installed" in result.stdout


def test_torch_compile_traces_auto_as_torch(monkeypatch):
    monkeypatch.setenv(dispatch.BACKEND_ENV, "auto")

    @torch.compile(fullgraph=True, backend="eager")
    def block(x, weight):
        return residual_norm(x, swiglu(x, x), weight)

    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(block(x, torch.ones(8)), residual_norm(x, swiglu(x, x), torch.ones(8),
                                                                      backend="torch"))


def test_decoding_ops_route_to_triton_only_where_it_serves():
    """matvec and decode_attention: Triton for one inference row / one query a row, the fallback otherwise
    (gradients needed, or a prompt of several queries, whatever the backend asked for)."""
    cpu = torch.device("cpu")
    x, weight = torch.randn(1, 1, 8), torch.randn(5, 8, requires_grad=True)
    assert dispatch.select_backend("matvec", "auto", cpu, lambda: None) == "triton"
    with pytest.raises(BackendError, match="matvec: .* no backward"):
        matvec(x, weight, backend="triton")
    with torch.no_grad():
        torch.testing.assert_close(matvec(x, weight, backend="triton"), x @ weight.T)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's dtype rules: F.linear's
            assert matvec(x, weight).dtype == torch.bfloat16
            with pytest.raises(BackendError, match="autocast is on"):
                matvec(x, weight, backend="triton")
        gate_up = torch.randn(1, 16)
        torch.testing.assert_close(matvec(gate_up, weight, gated=True, backend="triton"),
                                   swiglu(*gate_up.chunk(2, dim=-1), backend="torch") @ weight.T)
        fx, norm_weight = torch.randn(1, 1, 8), torch.rand(8) + 0.5
        h, y = residual_norm_matvec(x, fx, norm_weight, weight, alpha=2.0, backend="triton")
        expected_h = residual_norm(x, fx, norm_weight, alpha=2.0, backend="torch")
        torch.testing.assert_close(h, expected_h)
        torch.testing.assert_close(y, expected_h @ weight.T)
    with pytest.raises(BackendError, match="residual_norm_matvec: .* no backward"):
        residual_norm_matvec(x, fx, norm_weight, weight, backend="triton")
    # A prompt of 3 tokens (2 query heads, 1 key/value head) into an empty cache, RoPE at angle 0: SDPA, causal.
    qkv, keys, values = torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 6, 4), torch.zeros(1, 1, 6, 4)
    cos, sin, slots = torch.ones(1, 3, 4), torch.zeros(1, 3, 4), torch.arange(3)
    mask = torch.ones(1, 3, 6, dtype=torch.bool).tril()
    prompt = decode_attention(qkv, cos, sin, keys, values, mask, slots, backend="triton")
    q, k, v = qkv.transpose(1, 2).split([2, 1, 1], dim=1)
    assert torch.equal(keys[:, :, :3], k) and torch.equal(values[:, :, :3], v) and not keys[:, :, 3:].any()
    expected = torch.nn.functional.scaled_dot_product_attention(q, k.expand(1, 2, 3, 4), v.expand(1, 2, 3, 4),
                                                                is_causal=True)
    torch.testing.assert_close(prompt, expected.transpose(1, 2))


def test_compiling_keeps_auto_on_the_decoding_kernels_on_cuda_only(monkeypatch):
    """While torch.compile traces, auto still picks Triton for the decoding ops (triton_op: kept in the graph),
    on CUDA; the training ops and the interpreter's CPU tensors take the torch path."""
    picked = {}

    def pick(x):
        for op in ("matvec", "decode_attention", "swiglu"):
            for device in (torch.device("cpu"), torch.device("cuda", 0)):
                picked[op, device.type] = dispatch.select_backend(op, "auto", device, lambda: None)
        return x + 1

    real_device_reason = dispatch._device_reason
    monkeypatch.setattr(dispatch, "_device_reason", lambda device: None)
    monkeypatch.setattr(devices, "compute_capability", lambda device: (9, 0))
    torch.compile(pick, fullgraph=True, backend="eager")(torch.zeros(1))
    assert picked == {("matvec", "cpu"): "torch", ("matvec", "cuda"): "triton",
                      ("decode_attention", "cpu"): "torch", ("decode_attention", "cuda"): "triton",
                      ("swiglu", "cpu"): "torch", ("swiglu", "cuda"): "torch"}
    # The real device check, answered at trace time: the interpreter serves CPU tensors here.
    monkeypatch.setattr(dispatch, "_device_reason", real_device_reason)
    monkeypatch.setattr(dispatch, "COMPILABLE_DEVICE_TYPES", ("cuda", "cpu"))
    torch._dynamo.reset()
    torch.compile(pick, fullgraph=True, backend="eager")(torch.zeros(1))
    assert picked["matvec", "cpu"] == picked["decode_attention", "cpu"] == "triton"
