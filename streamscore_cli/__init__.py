"""streamscore: streamscore_cli."""
