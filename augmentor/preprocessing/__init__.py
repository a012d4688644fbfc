"""Detect, align and mask a whole dataset into resumable Parquet shards, and read the shards back."""
