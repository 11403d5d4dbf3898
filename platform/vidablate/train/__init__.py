"""The one training loop shared by every method, written for Ray Train."""
