"""Data loading: shards to training examples (token ids, base layout, pointer target) and batches."""
