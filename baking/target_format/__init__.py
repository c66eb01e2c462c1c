"""The target: features per window, their stored form (``features.json``), the grammar that
writes them as target items (tokens and base positions), stitching back."""
