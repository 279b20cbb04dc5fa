"""What the benchmarks and the integration tests share.

- :mod:`bench.harness.server`: start a server on a free loopback port, wait for it, stop it;
- :mod:`bench.harness.peers`: the servers the HTTP benchmarks compare (and building llama-server);
- :mod:`bench.harness.load`: measured streaming runs, and background traffic for the tests;
- :mod:`bench.harness.stats`: percentiles;
- :mod:`bench.harness.server_log`: a JSON server log's ERROR records, traceback included;
- :mod:`bench.harness.prompts`, :mod:`bench.harness.drift_questions`: what the benchmarks send;
- :mod:`bench.harness.report`: the HTTP results as tables, Markdown and a plot.
"""
