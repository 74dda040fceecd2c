"""Steppers that let `llm4rec.llm.decoding.beam_search` decode an encoder-decoder (sid_tiger's T5).

Each user's history is encoded once. Decoded sequences are short (a code tuple: 3-5 tokens),
so each step re-reads a beam's whole decoder prefix rather than keeping a self-attention cache.
Two steppers:

- `Seq2SeqStepper` (any Hugging Face encoder-decoder): the model's own decoder on each beam's
  prefix, with the encoder states gathered per beam. Obvious, and the reference.
- `T5SharedEncoderStepper` (stock T5 only, checked by exact class): the cross-attention keys and
  values of each user's encoder states are projected once and read by all of that user's beams
  in place (the grouped attention of `SharedPrefixStepper`); self-attention and feed-forward run
  through the model's own modules. Nothing the size of the history is copied per beam.
"""

from __future__ import annotations

import torch

from llm4rec.llm.decoding import _log_probs, pick_decoder


class Seq2SeqStepper:
    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        self.model, self.mask = model, attention_mask
        self.encoded = model.get_encoder()(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        self.prefix = torch.full(
            (len(input_ids), 1), model.config.decoder_start_token_id, device=input_ids.device
        )
        self.users = torch.arange(len(input_ids), device=input_ids.device)
        self.logp = self._forward()

    def _forward(self) -> torch.Tensor:
        out = self.model(
            encoder_outputs=(self.encoded[self.users],),
            attention_mask=self.mask[self.users],
            decoder_input_ids=self.prefix,
            use_cache=False,
        )
        return _log_probs(out.logits[:, -1, :])

    def step(
        self, sources: torch.Tensor, users: torch.Tensor, tokens: torch.Tensor
    ) -> torch.Tensor:
        self.prefix = torch.cat([self.prefix[sources], tokens[:, None]], dim=1)
        self.users = users
        return self._forward()


def t5_mismatch(model) -> str | None:
    """Why T5SharedEncoderStepper cannot decode this model (None when it can): it applies only to
    the stock T5 classes, whose cross-attention it re-implements."""
    from transformers.models.t5 import modeling_t5 as t5

    if type(model) is not t5.T5ForConditionalGeneration:
        return f"{type(model).__name__} where the stock T5ForConditionalGeneration was expected"
    for block in model.decoder.block:
        expected = [
            (block, t5.T5Block),
            (block.layer[0], t5.T5LayerSelfAttention),
            (block.layer[1], t5.T5LayerCrossAttention),
            (block.layer[1].EncDecAttention, t5.T5Attention),
            (block.layer[2], t5.T5LayerFF),
        ]
        for module, cls in expected:
            if type(module) is not cls:
                return f"{type(module).__name__} where the stock {cls.__name__} was expected"
    return None


class T5SharedEncoderStepper(Seq2SeqStepper):
    """Seq2SeqStepper's beam bookkeeping (`step`) over its own encoder states and forward."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        mismatch = t5_mismatch(model)
        if mismatch:
            raise ValueError(
                "T5SharedEncoderStepper re-implements stock T5 cross-attention; this model has "
                f"{mismatch}"
            )
        self.model, self.decoder = model, model.decoder
        config = model.config
        self.heads, self.dim = config.num_heads, config.d_kv
        encoded = model.get_encoder()(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        n_users, length = encoded.shape[:2]
        self.keys, self.values = [], []
        for block in self.decoder.block:
            attn = block.layer[1].EncDecAttention
            # [U, H, S, d]
            self.keys.append(
                attn.k(encoded).view(n_users, length, self.heads, self.dim).transpose(1, 2)
            )
            self.values.append(
                attn.v(encoded).view(n_users, length, self.heads, self.dim).transpose(1, 2)
            )
        dtype = encoded.dtype
        self.bias = torch.zeros(attention_mask.shape, dtype=dtype, device=encoded.device)
        self.bias.masked_fill_(attention_mask == 0, torch.finfo(dtype).min)
        self.bias = self.bias[:, None, None, :]  # [U, 1, 1, S]
        self.prefix = torch.full(
            (n_users, 1), config.decoder_start_token_id, device=input_ids.device
        )
        self.users = torch.arange(n_users, device=input_ids.device)
        self.logp = self._forward()

    def _cross_attention(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """q: [R, H, t, d] of rows grouped by user -> [R, H, t, d], against its user's states."""
        rows, heads, t, dim = q.shape
        users = self.users
        first = torch.searchsorted(users, users, side="left")
        slots = torch.arange(rows, device=q.device) - first
        width, n_users = int(slots.max()) + 1, self.keys[layer].shape[0]
        grouped = q.new_zeros((n_users, width, heads, t, dim))
        grouped[users, slots] = q
        grouped = grouped.permute(0, 2, 1, 3, 4).reshape(n_users, heads, width * t, dim)
        # T5: no 1/sqrt(d) scaling
        scores = grouped @ self.keys[layer].transpose(-1, -2) + self.bias
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = (
            (probs @ self.values[layer]).view(n_users, heads, width, t, dim).permute(0, 2, 1, 3, 4)
        )
        return out[users, slots]

    def _forward(self) -> torch.Tensor:
        rows, t = self.prefix.shape
        hidden = self.decoder.embed_tokens(self.prefix)
        first_attention = self.decoder.block[0].layer[0].SelfAttention
        causal = torch.full((t, t), torch.finfo(hidden.dtype).min, device=hidden.device).triu(1)
        # shared by every block
        position_bias = first_attention.compute_bias(t, t, device=hidden.device) + causal
        for index, block in enumerate(self.decoder.block):
            hidden = block.layer[0](hidden, position_bias=position_bias)[0]
            cross = block.layer[1]
            q = (
                cross.EncDecAttention.q(cross.layer_norm(hidden))
                .view(rows, t, self.heads, self.dim)
                .transpose(1, 2)
            )
            out = (
                self._cross_attention(index, q)
                .transpose(1, 2)
                .reshape(rows, t, self.heads * self.dim)
            )
            hidden = hidden + cross.EncDecAttention.o(out)
            hidden = block.layer[2](hidden)
        hidden = self.decoder.final_layer_norm(hidden[:, -1])
        if self.model.config.scale_decoder_outputs:
            hidden = hidden * self.model.model_dim**-0.5
        return _log_probs(self.model.lm_head(hidden))


def resolve_seq2seq_decoder(model, decoder: str = "auto") -> str:
    """`decoder`: auto (the shared-encoder T5 stepper where it applies, else generic) |
    shared_encoder (refused, naming why, where it does not apply) | generic."""
    cross = "stock T5 cross-attention"
    return pick_decoder(decoder, "shared_encoder", "generic", t5_mismatch(model), cross)


def make_seq2seq_stepper(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder: str = "auto"
):
    shared = resolve_seq2seq_decoder(model, decoder) == "shared_encoder"
    return (T5SharedEncoderStepper if shared else Seq2SeqStepper)(model, input_ids, attention_mask)


def seq2seq_log_probs(model, input_ids: torch.Tensor, prefixes: list[list[int]]) -> torch.Tensor:
    """Log-probabilities [rows, positions, vocab] of an encoder-decoder after each position of
    each token prefix (teacher forcing from the decoder start), one prompt (`input_ids`, [1, n])
    for every row; rows shorter than the longest are padded (their extra positions are unused)."""
    length = max(len(p) for p in prefixes)
    start = model.config.decoder_start_token_id
    decoder = torch.tensor(
        [[start] + p + [start] * (length - len(p)) for p in prefixes], device=input_ids.device
    )
    encoder = input_ids.expand(len(prefixes), -1)
    out = model(input_ids=encoder, decoder_input_ids=decoder, use_cache=False)
    return _log_probs(out.logits)
