"""The training engine and its parts: config, steps, validation, checkpoints, export, monitoring."""
