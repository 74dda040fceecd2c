"""One precision policy for every LLM paradigm, applied by the shared LLM layer, not per paradigm.

- The frozen backbone stays in its load dtype (`backbone.dtype`; `auto`: bf16 on a GPU that
  supports it, fp32 otherwise and on CPU).
- Everything that trains is kept in fp32: LoRA adapters, and whatever a paradigm adds (CF
  projectors, E4SRec's output layer and bias, IDIOMoE's item vectors, output head, experts,
  router and bias, new code rows). These are the master weights: an update of 1e-3 to a bias near 8
  survives in fp32 and rounds away in bf16, whose step there is 0.03.
- Compute runs under autocast to the backbone's dtype (training, ranking and text perplexity alike),
  so a bf16 backbone computes in bf16 whatever the dtype of the weights it meets; an fp32 backbone
  runs without autocast.
- Every parameter and buffer is on the backbone's device, wherever a paradigm created it.
- Scores that rank items are computed in fp32 with autocast off: an item head (E4SRec's prediction
  layer, IDIOMoE's item vectors, their biases) always, a language-model head wherever a ranking or
  a policy's log-probabilities read it (`fp32_output`). bf16 keeps 8 significant bits: over a
  catalogue of thousands of items most of the top 50 would share a score with another item, and a
  GPU's `topk` orders ties arbitrarily (tests/test_precision.py shows the ties and their absence).

`settle` applies the first, second and last points to a model after a paradigm has prepared it (and
after LoRA wrapping); `autocast` gives the compute context, `scoring` the same with the fp32 output
layer; `record` is what `run.json` says.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

LOW_PRECISION = (torch.bfloat16, torch.float16)


def backbone_dtype(model) -> torch.dtype:
    """The dtype a settled model computes in, read off it: the lowest-precision floating dtype among
    its frozen parameters, else fp32 (for callers not told, e.g. `train_sft` on a bare model)."""
    frozen = {p.dtype for p in model.parameters() if p.is_floating_point() and not p.requires_grad}
    return next((dtype for dtype in LOW_PRECISION if dtype in frozen), torch.float32)


def settle(model, device: str | torch.device, dtype: torch.dtype) -> None:
    """Move every parameter and buffer onto `device`; keep trainable parameters in fp32 and give
    frozen floating-point parameters the backbone's `dtype`. Buffers keep their dtype (a backbone's
    own, e.g. rotary frequencies, are fp32 on purpose; a CF table stays an fp32 input)."""
    model.to(device)
    with torch.no_grad():
        for param in model.parameters():
            if not param.is_floating_point():
                continue
            wanted = torch.float32 if param.requires_grad else dtype
            if param.dtype != wanted:
                param.data = param.data.to(wanted)


def autocast(dtype: torch.dtype, device: str | torch.device):
    """Compute context for a backbone of `dtype`: autocast to it if bf16 / fp16; an fp32 backbone
    on a GPU runs its matmuls in TF32 (`tf32_used`), anywhere else no context."""
    kind = torch.device(device).type
    if dtype in LOW_PRECISION:
        return torch.autocast(kind, dtype=dtype)
    return cuda_matmul_precision("tf32") if kind == "cuda" else contextlib.nullcontext()


@contextlib.contextmanager
def cuda_matmul_precision(mode: str):
    """CUDA fp32 matmuls in `mode` ("tf32": 10-bit mantissa inputs, fp32 accumulation; "ieee")
    within the context, the process's setting restored after. `NVIDIA_TF32_OVERRIDE=0` in the
    environment keeps cuBLAS in ieee whatever is asked here."""
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    matmul.fp32_precision = mode
    try:
        yield
    finally:
        matmul.fp32_precision = before


def tf32_used(compute: torch.dtype, device: str | torch.device) -> bool:
    """Whether `autocast(compute, device)` runs the backbone's matmuls in TF32."""
    return compute not in LOW_PRECISION and torch.device(device).type == "cuda"


def fp32_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """x @ weight.T (+ bias) in fp32 with autocast off, whatever the dtypes it is given, and in
    full (ieee) fp32 on a GPU even inside a TF32 context: TF32 keeps 10 mantissa bits, few
    enough to bring back the score ties this exists to avoid."""
    with torch.autocast(x.device.type, enabled=False), cuda_matmul_precision("ieee"):
        out = nn.functional.linear(x.float(), weight.float())
        # the bias added apart, as the fp32 path always did
        return out if bias is None else out + bias.float()


@contextlib.contextmanager
def fp32_output(model):
    """Within it, `model`'s output layer (`get_output_embeddings`: a causal LM's or T5's LM head,
    through a PEFT wrapper too) computes in fp32 with autocast off; outside it, as it was. Only the
    positions a caller keeps reach the head (`logits_to_keep`), so the cost is a few positions."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and "forward" in vars(head):  # already inside an fp32_output
        yield
        return
    if isinstance(head, nn.Linear):
        head.forward = lambda x: fp32_linear(x, head.weight, head.bias)
    elif isinstance(getattr(getattr(head, "token_adapter", None), "base_layer", None), nn.Linear):
        # PEFT's trainable token rows on a (tied) LM head: the rows merged in fp32
        head.forward = lambda x: fp32_linear(x, _merged_rows(head.token_adapter))
    else:
        yield
        return
    try:
        yield
    finally:
        del head.forward


def _merged_rows(layer) -> torch.Tensor:
    """A PEFT `TrainableTokensLayer`'s weight with its trained rows in place, in fp32 (PEFT's own
    merge casts the fp32 rows to the frozen weight's dtype first)."""
    weight = layer.base_layer.weight.float()
    if layer.disable_adapters or layer.merged:
        return weight
    for name in layer.active_adapters:
        index = torch.tensor(layer.token_indices[name], device=weight.device)
        weight = weight.index_copy(0, index, layer.trainable_tokens_delta[name].float())
    return weight


@contextlib.contextmanager
def scoring(model, dtype: torch.dtype, device: str | torch.device):
    """The context a ranking or a policy's log-probabilities run in: `autocast(dtype, device)`
    with `model`'s output layer in fp32 (`fp32_output`)."""
    with autocast(dtype, device), fp32_output(model):
        yield


def record(model, compute: torch.dtype) -> dict[str, str]:
    """What ran, for run.json: the backbone's dtype, the trainable weights' dtype(s), the autocast
    dtype, the backbone's fp32 matmuls (tf32 on a GPU, `tf32_used`; score heads are ieee always),
    and the device(s) of every parameter and buffer (one, once settled)."""
    trainable = sorted(
        {str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad}
    )
    devices = sorted({str(t.device) for t in (*model.parameters(), *model.buffers())})
    return {
        "backbone_dtype": str(compute).removeprefix("torch."),
        "trainable_dtype": ",".join(trainable) or "none",
        "autocast": str(compute).removeprefix("torch.") if compute in LOW_PRECISION else "off",
        "fp32_matmul": "tf32" if any(tf32_used(compute, d) for d in devices) else "ieee",
        "devices": ",".join(devices),
    }
