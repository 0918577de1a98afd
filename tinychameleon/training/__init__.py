"""Training: both stages (VQ-VAE tokenizer, transformer) share the schedule, checkpoints and logs."""
