"""Training: trainer, checkpoints, learning curves."""
