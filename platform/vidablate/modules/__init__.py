"""Paper modules, one file per paper (its layers, knobs, validation and build step); the
registry (``vidablate.modules.registry``) lists them in composer order."""
