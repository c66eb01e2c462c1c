"""Evaluation: predicted GFF3 against a reference (exact, stop-codon, base level), Prodigal baseline."""
