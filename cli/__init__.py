"""ggserve command line."""
