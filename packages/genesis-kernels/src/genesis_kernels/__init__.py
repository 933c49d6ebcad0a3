"""Triton flash attention, fused SwiGLU and fused DeepNorm residual norm, and the one-row projection and cache
attention step (RoPE, cache write, attention) of batch-1 decoding, with PyTorch fallbacks."""

from .dispatch import (BackendError, available_backends, decode_attention, flash_attention, matvec, residual_norm,
                       residual_norm_matvec, swiglu)
from .fallback import apply_rotary

__all__ = ["BackendError", "apply_rotary", "available_backends", "decode_attention", "flash_attention", "matvec",
           "residual_norm", "residual_norm_matvec", "swiglu"]
