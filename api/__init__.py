"""streamscore: api."""
