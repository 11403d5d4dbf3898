"""Sweeps: search-space files, the Ray Tune runner and MLflow tracking."""
