"""ggserve's benchmarks and the harness the integration tests share with them.

Run one with ``python -m bench NAME [args]``; ``python -m bench --help`` lists them
(:mod:`bench.catalog`). ``bench.harness`` holds what benchmarks and tests share: the server
process, the load generators, percentiles, the prompts and the report tables. One-off probes
live in ``bench.experiments``. Neither ``server`` nor ``cli`` imports this package.
"""
