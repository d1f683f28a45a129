"""Detection: the server log followed and judged, the wire judged, and the run's totals kept once."""
