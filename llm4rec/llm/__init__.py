"""Shared LLM machinery: backbone loading, the shared LLM recommender (training with checkpoint
selection, batched ranking), new vocabulary and soft tokens, item identifiers, the catalogue
trie, catalogue-constrained decoding (beam search and exhaustive scoring; encoder-decoder
steppers in seq2seq), one-forward item scoring, the precision policy, data parallelism and text
retention."""
