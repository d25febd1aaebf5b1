"""streamscore: scoring."""
