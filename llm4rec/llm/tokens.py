"""Two ways a paradigm writes items into a backbone beyond plain text.

- New vocabulary tokens (`add_tokens`): one token per semantic-ID code (sid_llm). The tokenizer
  learns them as single, unsplittable tokens; the input (and, when untied, output) embedding
  matrices grow by as many rows, initialised explicitly so a seed fixes them. Rows of the
  existing vocabulary are left exactly as they were. (IDIOMoE's item tokens live in an
  embedding of their own, `llm4rec.paradigms.idiomoe.CatalogueEmbedding`.)
- Soft tokens (`prompt_embeddings`): positions of a prompt given as vectors rather than ids
  (e.g. CF embeddings projected into the LLM's space). The decoders in `llm4rec.llm.decoding`
  take the result as `inputs_embeds` for the prefill.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def add_tokens(
    model, tokenizer, tokens: Sequence[str], init: torch.Tensor | str = "mean", seed: int = 0
) -> list[int]:
    """Add `tokens` to the vocabulary; return their ids (in `tokens` order).

    `init`: a [len(tokens), D] matrix for the new input-embedding rows, "mean" (the mean of
    the existing rows) or "random" (normal with the existing rows' std, seeded). Untied output
    rows are initialised the same way.
    """
    existing = [t for t in tokens if t in tokenizer.get_vocab()]
    if existing:
        raise ValueError(
            f"tokens already in the vocabulary: {existing[:3]} ({len(existing)} of {len(tokens)})"
        )
    if len(set(tokens)) != len(tokens):
        raise ValueError("new tokens must be distinct")
    old = model.get_input_embeddings().weight.shape[0]
    # special: never split, never merged with neighbours
    tokenizer.add_tokens(list(tokens), special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    if ids != list(range(len(tokenizer) - len(tokens), len(tokenizer))):
        raise ValueError("new tokens did not receive the last ids of the vocabulary")
    model.resize_token_embeddings(max(len(tokenizer), old), mean_resizing=False)
    with torch.no_grad():
        for matrix in _embedding_matrices(model):
            matrix[ids] = _new_rows(matrix[:old], len(ids), init, seed).to(matrix.dtype)
    return ids


def _embedding_matrices(model) -> list[torch.Tensor]:
    inputs = model.get_input_embeddings().weight
    outputs = model.get_output_embeddings()
    tied = outputs is None or outputs.weight.data_ptr() == inputs.data_ptr()
    return [inputs] if tied else [inputs, outputs.weight]


def _new_rows(existing: torch.Tensor, n: int, init: torch.Tensor | str, seed: int) -> torch.Tensor:
    if isinstance(init, torch.Tensor):
        if init.shape != (n, existing.shape[1]):
            raise ValueError(
                f"init has shape {tuple(init.shape)}, expected {(n, existing.shape[1])}"
            )
        return init
    if init == "mean":
        return existing.float().mean(dim=0).expand(n, -1).clone()
    if init == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.randn((n, existing.shape[1]), generator=generator) * existing.float().std()
    raise ValueError(f"init '{init}' is not one of: mean, random, or a matrix")


def prompt_embeddings(
    model, input_ids: torch.Tensor, soft: Mapping[int, Mapping[int, torch.Tensor]]
) -> torch.Tensor:
    """Input embeddings of `input_ids` ([rows, T]) with soft tokens put in place:
    `soft[row][position]` is a [D] vector replacing that position's token embedding (the id
    there is a placeholder, e.g. the pad token). One scatter for the whole batch; gradients flow
    into the vectors (a projector trains through them)."""
    embeds = model.get_input_embeddings()(input_ids)
    where = [(row, position) for row, vectors in soft.items() for position in vectors]
    if not where:
        return embeds
    rows, positions = (
        torch.tensor(column, device=embeds.device) for column in zip(*where, strict=True)
    )
    vectors = torch.stack([soft[row][position] for row, position in where]).to(
        embeds.device, embeds.dtype
    )
    return embeds.index_put((rows, positions), vectors)
