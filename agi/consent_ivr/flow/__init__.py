"""Flow files: the immutable model, the YAML loader and its validator."""
