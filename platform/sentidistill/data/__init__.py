"""Data access: data-dir resolution, the corpus reader, dataset fetching (task splits: `tasks.splits`)."""
