"""Triton kernels. Importing any module here imports Triton; :mod:`genesis_kernels.dispatch` does so lazily."""
