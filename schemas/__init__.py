"""streamscore: schemas."""
