"""Everything that knows HTTP: routes, dependencies, the error envelope, streaming."""
