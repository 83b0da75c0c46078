"""Training machinery: optimizer groups and schedule, EMA, checkpoints, DDP, the training loops, feature extraction."""
