"""The device plane: routing device messages, the node registry view, telemetry validation."""
