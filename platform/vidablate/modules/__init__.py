"""Paper modules, one file per paper; each module takes explicit constructor arguments."""
