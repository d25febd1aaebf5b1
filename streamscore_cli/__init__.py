"""The ``streamscore`` command: train, seed, produce, run, api, demo."""
