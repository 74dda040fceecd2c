"""Shared LLM machinery: backbone loading, the shared LLM recommender (training with checkpoint
selection, batched ranking), new vocabulary and soft tokens, item identifiers, the catalogue
trie, and catalogue-constrained decoding (beam search and exhaustive scoring)."""
