"""Keys a trial's reports carry besides its metrics: written by the training loop, read by the
sweep (MLflow tracking, outcomes). They live here, below the sweep, so training never imports
the sweep layer."""

KSHOT_KEY = "kshot_split"
"""A trial's first report carries its drawn k-shot list (JSON), saved as an artifact."""
DIVERGED_KEY = "diverged"
"""Reported (with the reason) when the training loss is not finite; the trial stops, its run
is marked FAILED with the reason as the ``vidablate.failure`` tag."""
REPLAYED_KEY = "replayed"
"""Marks a report that repeats a finished trial's final result; it is not logged again."""
HISTORY_KEY = "checkpointed_history"
"""The first report of a trial restored from a checkpoint carries the checkpoint's per-epoch
metrics (JSON): epochs trained and checkpointed after the driver stopped listening (Ctrl-C,
a lost driver) reach MLflow then, so every checkpointed epoch is logged exactly once."""
DIAGNOSTIC_METRICS = ("sgam_entropy", "sgam_window_mass", "sgam_peak_in_window",
                      "sirm_entropy", "sirm_window_mass", "sirm_peak_in_window",
                      "window_fraction", "imu_grad_norm")
"""Per-epoch measurements of IS-CLIP's IMU-driven modules (``vidablate.train.diagnostics``)."""
NODE_KEY = "node"
"""Every epoch's report names the Ray node that trained it (its node id): the sweep tags the
run with it, and with every node the trial ran on, in order, when it moved (a lost node)."""
LOOP_TIME_KEY = "loop_s"
"""Seconds of an epoch inside the training loop (its training steps and its evaluation):
the sweep sets a table's wall time against their sum (``sweep.timing``)."""
