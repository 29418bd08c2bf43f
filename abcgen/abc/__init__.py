"""ABC notation: reading tune books, the canonical writer, tokenizers."""
