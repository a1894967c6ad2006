"""The driver behind scripts/bench (run as `python -m bench_lib` with scripts/ on the path)."""
