"""OpenTelemetry for breakerd (filled in by the telemetry work)."""
