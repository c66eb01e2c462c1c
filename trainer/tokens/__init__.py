"""Tokenizer handling: DNABERT-2 tokenizer plus annotation tokens, and resizing a model to it."""
