"""The target: features per window, the grammar that spells them as tokens, stitching back."""
