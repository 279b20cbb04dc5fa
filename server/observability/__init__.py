"""Logs, metrics and request ids: what an operator sees."""
