"""Inference: grammar-constrained generation, genome annotation (windows -> GFF3), ORF snapping."""
