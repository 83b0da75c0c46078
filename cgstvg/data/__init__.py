"""Datasets: the normalized schema, per-dataset readers, the synthetic default, frame sampling and shards."""
