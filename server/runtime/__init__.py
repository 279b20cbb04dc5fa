"""What one app holds and how it comes up: services, loading, readiness, the embedder."""
