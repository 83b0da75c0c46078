"""Datasets: the normalized schema, per-dataset readers, the synthetic default, frame sampling, shards and the
cached-feature loader."""
