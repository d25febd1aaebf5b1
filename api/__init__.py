"""The HTTP sidecar: ``/predict`` on the same scoring pipeline as the stream."""
