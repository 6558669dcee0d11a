"""The benchmarks are scripts to run by hand, not tests: keep pytest out of them."""

collect_ignore_glob = ["bench_*.py", "benchlib.py"]
