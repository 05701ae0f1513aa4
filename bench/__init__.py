"""dbgfwd benchmarks (not tests): run `python -m bench [--quick]` from the repository root."""
