"""Drift monitoring: does production traffic still look like the reference it was judged on?

Observations (one per answered request) go into a frozen reference window and a sliding
current window; an evaluation compares the two with two-sample tests and reports each signal
with a statistic, a p-value and a verdict. Nothing here knows HTTP: the api layer calls
:meth:`server.drift.monitor.DriftMonitor.observe` and the runtime runs the background loop.
"""
