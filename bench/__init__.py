"""obsmcp benchmark suite: ingest throughput, tool latency, grep comparison and answer sizes.

Run with ``python -m bench.run`` (see ``bench/run.py`` and ``bench/results/README.md``).
"""
