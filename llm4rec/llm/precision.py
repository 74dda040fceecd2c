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

`settle` applies the first, second and last points to a model after a paradigm has prepared it (and
after LoRA wrapping); `autocast` gives the compute context; `record` is what `run.json` says.
"""

from __future__ import annotations

import contextlib

import torch

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
    """Compute context for a backbone of `dtype`: autocast to it if bf16 / fp16, else none."""
    if dtype not in LOW_PRECISION:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def record(model, compute: torch.dtype) -> dict[str, str]:
    """What ran, for run.json: the backbone's dtype, the trainable weights' dtype(s), the autocast
    dtype, and the device(s) of every parameter and buffer (one, once settled)."""
    trainable = sorted(
        {str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad}
    )
    devices = sorted({str(t.device) for t in (*model.parameters(), *model.buffers())})
    return {
        "backbone_dtype": str(compute).removeprefix("torch."),
        "trainable_dtype": ",".join(trainable) or "none",
        "autocast": str(compute).removeprefix("torch.") if compute in LOW_PRECISION else "off",
        "devices": ",".join(devices),
    }
