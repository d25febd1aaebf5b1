"""Process-wide telemetry every streamscore process shares: logs, event-loop lag, gc tuning.

Nothing here knows Kafka, HTTP or the model; both doors and the CLI use it.
"""
