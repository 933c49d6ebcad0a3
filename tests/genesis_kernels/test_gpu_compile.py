"""Every Triton kernel compiled for each GPU family, on a machine without a GPU.

Triton compiles through ptxas for any target without a device. What the interpreter cannot catch fails here
instead of on a lent GPU: types and layouts the compiler rejects, and launch configs whose shared memory exceeds
a family's limit (sm_75: 64 KiB; sm_8x: 100 KiB, sm_86/89 being the tightest of the family; sm_90: 227 KiB).
The compiles run in a subprocess without TRITON_INTERPRET (the conftest sets it for everything else).
"""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os
    import sys
    from concurrent.futures import ProcessPoolExecutor

    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from genesis_kernels.kernels import decode_attention, flash_attention, matvec, residual_norm, swiglu

    # (capability compiled for, shared memory limit in bytes) per launch-config family
    FAMILIES = {"sm_75": (75, 64 * 1024), "sm_8x": (86, 100 * 1024), "sm_90": (90, 227 * 1024)}
    FP32_POINTERS = {"LSE", "DELTA", "RSTD", "MEAN", "GRAD_W_PARTIAL", "GRAD_B_PARTIAL", "COS", "SIN"}
    OTHER_POINTERS = {"MASK": "*i1", "SLOT": "*i64"}
    FLOAT_SCALARS = {"alpha", "eps", "qk_scale", "softmax_scale", "scale"}
    # The triton_op kernels are compiled by Inductor inside a compiled graph, which types Python float arguments
    # as fp64 (Triton's own launcher types them fp32): a kernel must keep its fp32 arithmetic fp32 under both.
    INDUCTOR_COMPILED = {"decode_attention", "matvec"}
    TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

    def compile_for(job):
        family, module, kernel_name, dtype, constexprs, num_warps, num_stages = job
        kernel = getattr(globals()[module], kernel_name)  # by name: modules do not pickle
        capability, shared_limit = FAMILIES[family]
        signature = {}
        for name in kernel.arg_names:
            if name in constexprs:
                signature[name] = "constexpr"
            elif name.isupper():
                signature[name] = OTHER_POINTERS.get(name, "*fp32" if name in FP32_POINTERS else "*" + dtype)
            else:
                float_type = "fp64" if module in INDUCTOR_COMPILED else "fp32"
                signature[name] = float_type if name in FLOAT_SCALARS else "i32"
        constants = {(kernel.arg_names.index(name),): value for name, value in constexprs.items()}
        what = f"{family} {kernel_name} {dtype} {constexprs} warps={num_warps} stages={num_stages}"
        try:
            compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constants),
                                      target=GPUTarget("cuda", capability, 32),
                                      options={"num_warps": num_warps, "num_stages": num_stages})
        except Exception as error:
            return f"{what}: {type(error).__name__}: {str(error)[:300]}"
        if compiled.metadata.shared > shared_limit:
            return f"{what}: {compiled.metadata.shared} bytes of shared memory > {shared_limit}"
        return None

    def jobs():
        for family in FAMILIES:
            half = "fp16" if family == "sm_75" else "bf16"  # sm_75 has no bf16 tensor cores (dispatch refuses)
            for dtype in (half, "fp32"):
                for head_dim in (64, 128):
                    # The configs the kernels launch with for long sequences in this dtype.
                    forward, backward = flash_attention.family_launch_configs(family, head_dim, 4096,
                                                                              TORCH_DTYPES[dtype])
                    common = dict(CAUSAL=True, DOT_PRECISION="ieee" if dtype == "fp32" else "tf32",
                                  BLOCK_D=head_dim)
                    yield (family, "flash_attention", "attention_forward_kernel", dtype,
                           dict(common, BLOCK_M=forward.block_m, BLOCK_N=forward.block_n),
                           forward.num_warps, forward.num_stages)
                    for name in ("attention_backward_dkdv_kernel", "attention_backward_dq_kernel"):
                        yield (family, "flash_attention", name, dtype,
                               dict(common, BLOCK_M=backward.block_m, BLOCK_N=backward.block_n),
                               backward.num_warps, backward.num_stages)
                    yield (family, "flash_attention", "attention_backward_delta_kernel", dtype,
                           dict(BLOCK_M=backward.block_m, BLOCK_D=head_dim), backward.num_warps, 2)
                _, meta = swiglu._launch(16384, 2048)
                warps = meta.pop("num_warps")
                for name in ("swiglu_forward_kernel", "swiglu_backward_kernel"):
                    yield family, "swiglu", name, dtype, meta, warps, 2
                meta = residual_norm._tile(16384)  # the widest row the kernel takes: the most registers
                warps = meta.pop("num_warps")
                for layer_norm in (False, True):
                    for name in ("residual_norm_forward_kernel", "residual_norm_backward_kernel"):
                        yield (family, "residual_norm", name, dtype,
                               dict(meta, LAYER_NORM=layer_norm, HAS_BIAS=layer_norm), warps, 2)
                for gated, norm in ((False, False), (True, False), (False, True)):
                    _, meta = matvec._launch(8192, 768, norm=norm)
                    warps = meta.pop("num_warps")
                    yield family, "matvec", "matvec_kernel", dtype, dict(meta, GATED=gated, NORM=norm), warps, 2
                yield (family, "decode_attention", "decode_attention_kernel", dtype,
                       dict(N_HEADS=8, GROUPS=2, BLOCK_HALF=64, BLOCK_SLOTS=decode_attention.BLOCK_SLOTS),
                       decode_attention.NUM_WARPS, 2)

    if __name__ == "__main__":
        with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
            failures = [failure for failure in pool.map(compile_for, list(jobs())) if failure]
        print("\\n".join(failures) if failures else "every kernel compiled")
        sys.exit(1 if failures else 0)
""")


def test_every_kernel_compiles_for_each_gpu_family(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    # A file, not `python -c`: the process pool's workers import the script's functions by module.
    script = tmp_path / "compile_kernels.py"
    script.write_text(SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=1200)
    if "No module named 'triton.backends.nvidia'" in result.stderr:
        pytest.skip("this Triton has no CUDA backend")
    assert result.returncode == 0 and "every kernel compiled" in result.stdout, \
        (result.stdout + result.stderr)[-4000:]
