"""streamscore: streams."""
