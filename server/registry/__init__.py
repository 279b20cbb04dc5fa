"""The model registry: versions with lineage, promotion and rollback (no HTTP here)."""
