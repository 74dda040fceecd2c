"""Shared LLM machinery: backbone loading, item identifiers, the catalogue trie, and
catalogue-constrained decoding (beam search and exhaustive scoring)."""
