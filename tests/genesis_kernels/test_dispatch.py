"""Backend selection: the environment variable, the argument, auto, and Triton's absence."""

import subprocess
import sys
import textwrap

import pytest
import torch

from genesis_kernels import BackendError, available_backends, residual_norm, swiglu
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
        monkeypatch.setattr(dispatch, "_capability", lambda device, capability=capability: capability)
        assert dispatch.gpu_family(torch.device("cuda", 0)) == family
    assert dispatch.gpu_family(torch.device("cpu")) == "interpreter"


def test_bf16_refused_on_turing(monkeypatch):
    monkeypatch.setattr(dispatch, "_capability", lambda device: (7, 5))
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
