"""Data loading: shards to batches of token ids."""
