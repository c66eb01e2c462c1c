"""dna2gff baking: genome FASTA + GFF3 -> windowed webdataset shards with annotation targets.

This package owns every file format (FASTA, GFF3, shards) and the target grammar; it imports
nothing from ``trainer`` so that data can be prepared on machines without torch.
"""

__version__ = "0.1.0"
