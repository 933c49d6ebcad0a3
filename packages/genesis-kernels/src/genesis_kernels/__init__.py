"""genesis_kernels."""
