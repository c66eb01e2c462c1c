"""File formats: FASTA, GFF3 and the tokens file (reading, validating, writing)."""
