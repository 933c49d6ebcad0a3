"""Tools that chose genesis_kernels' shipped constants, run by hand or by gpu.sh: not part of the pytest suite (see
benchmarks/tuning/README.md)."""
