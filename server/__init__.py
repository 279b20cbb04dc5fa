"""ggserve HTTP service."""
