"""Batch programs: feature pipelines (index builds, user features, instruction datasets) and training."""
