"""The reproduction dashboard: a static site (no server, no CDN) built from MLflow and the
space files: a status page over every space and one page per table."""
