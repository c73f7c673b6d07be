"""The Grafana dashboard of Feedback Pulse (docs/dashboard.md), generated from code."""
