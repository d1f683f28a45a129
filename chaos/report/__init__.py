"""What a run shows: Prometheus metrics, terminal and file reports, matrix tables, the Grafana dashboard."""
