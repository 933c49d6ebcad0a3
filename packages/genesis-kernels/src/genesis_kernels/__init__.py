"""Triton flash attention, fused SwiGLU and fused DeepNorm residual norm, and the one-row projection and cache
attention of batch-1 decoding, with PyTorch fallbacks."""

from .dispatch import (BackendError, available_backends, decode_attention, flash_attention, matvec, residual_norm,
                       swiglu)

__all__ = ["BackendError", "available_backends", "decode_attention", "flash_attention", "matvec", "residual_norm",
           "swiglu"]
