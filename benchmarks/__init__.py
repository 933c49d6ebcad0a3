"""The Genesis Engine benchmark suite (pytest-benchmark); see benchmarks/README.md."""
