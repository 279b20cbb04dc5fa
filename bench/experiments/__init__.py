"""One-off probes kept for the figures the docs quote; not run by ``python -m bench all``."""
