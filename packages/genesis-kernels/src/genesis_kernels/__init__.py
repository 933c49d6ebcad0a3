"""Triton flash attention, fused SwiGLU and fused DeepNorm residual norm, with PyTorch fallbacks."""

from .dispatch import BackendError, available_backends, flash_attention, residual_norm, swiglu

__all__ = ["BackendError", "available_backends", "flash_attention", "residual_norm", "swiglu"]
