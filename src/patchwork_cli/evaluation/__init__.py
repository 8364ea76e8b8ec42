"""Scoring runs against the current labels: metrics, the tables and plots of evaluate, status."""
