"""Shared generation layer used by the generate and ICLDist stages: teacher requests per batch
(`generation`), output checks (`quality`), resumable parquet parts (`outputs`)."""
