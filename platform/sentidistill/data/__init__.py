"""Data access: data-dir resolution, corpus readers, SentiBench loaders."""
