"""Training and evaluation machinery: optimizer groups and schedule, EMA, checkpoints, DDP, the loops, extraction."""
