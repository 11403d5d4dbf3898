"""Datasets: the embedded synthetic video+IMU set and loaders for real clips."""
