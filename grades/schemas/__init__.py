"""JSON schemas (YAML) shipped with the package."""
