"""Training: pure torch steps, the per-worker loop, and the TorchTrainer driver."""
