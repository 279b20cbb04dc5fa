"""API keys, rate limits and guardrails."""
