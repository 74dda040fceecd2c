"""Fine-tuning one model on several processes (GPUs): synchronous data parallelism, no DDP wrapper.

A model asking for `resources: {gpu: N}` with N > 1 is trained by `llm4rec train` re-executing
itself under `torchrun --standalone --nproc_per_node N` (the train rule and its SLURM submission are
unchanged: one job holding N GPUs); each process runs the same job. Within it:
- training: every optimiser step of `sft.batch_size` x `sft.grad_accum` examples is split by
  micro-batch: process r takes micro-batches r, r + N, ... (so `grad_accum` must be a multiple of
  N); after the backward passes the gradients of everything that trains are summed across processes
  (one all-reduce of a flat buffer), then every process takes the same optimiser step. The loss
  curve and the weights are those of one process running all the micro-batches (float summation
  order aside);
- dropout: each micro-batch seeds the random generators from (seed, step, micro-batch) before
  its forward pass, so micro-batch m draws the same dropout masks whichever process runs it, and a
  resumed run draws what an uninterrupted one would (no generator state to save per process);
- a parameter with no gradient on any process keeps none (the optimiser skips it, as one process
  would); a checkpoint written under another configuration is removed by process 0 alone, after
  every process has read it;
- checkpoints, the selected `best.pt` and every output file are written by process 0 alone;
- ranking: the batches of users are dealt out across processes and the rankings gathered, each user
  ranked in exactly the batch it would be in alone, so the rankings equal a single process's.

The paradigms' forward passes are untouched (IDIOMoE reaches into the decoder stack, E4SRec reads
hidden states): there is no DistributedDataParallel wrapper to bypass. Gradient checkpointing and
the attention implementation are backbone options (`backbone.gradient_checkpointing`,
`backbone.attn_implementation`). Backend: NCCL on CUDA, gloo on CPU (the tests run 2 on gloo).
Only the SFT-trained LLM rows have this path; a grid asking `gpu` > 1 for any other row is refused
(`ModelSpec.multi_process`).
"""

from __future__ import annotations

import os

import pandas as pd
import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def relaunch_per_gpu(gpus: int, argv: list[str]) -> None:
    """Replace this process by torchrun running the same `llm4rec` command on `gpus` processes."""
    import sys

    if int(gpus) <= 1 or "WORLD_SIZE" in os.environ:
        return
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={int(gpus)}",
        "-m",
        "llm4rec.cli",
        *argv,
    ]
    print(f"[llm4rec] {int(gpus)} GPUs: {' '.join(command[1:])}", flush=True)
    os.execv(sys.executable, command)


def init_from_env(device: str) -> str:
    """Join the process group torchrun described (WORLD_SIZE > 1); return this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (
        dist.is_available() and dist.is_initialized()
    ):
        return device
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if cuda else "gloo")
    return device


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def all_sum(value: float) -> float:
    if world()[1] == 1:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return float(tensor.item())


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients of `params` across processes. A parameter with a gradient on some process
    gets the sum (a process without one adds zero); a parameter with a gradient on none keeps
    `grad = None`, so the optimiser skips it, as one process would (AdamW would otherwise decay and
    step it on a zero gradient: e.g. LLaRA's projector before its curriculum reaches it)."""
    if world()[1] == 1 or not params:
        return
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([has, *(g.reshape(-1).to(torch.float32) for g in grads)])
    dist.all_reduce(flat)
    offset = len(params)
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).to(g.dtype) if flat[i] > 0 else None
        offset += n


def deal(batches: list) -> list:
    """This process's share of `batches` (round-robin)."""
    rank, size = world()
    return batches[rank::size]


def gather_frames(frame: pd.DataFrame) -> pd.DataFrame:
    """Every process's rows, concatenated in rank order, on every process."""
    if world()[1] == 1:
        return frame
    parts: list = [None] * world()[1]
    dist.all_gather_object(parts, frame)
    return pd.concat(parts, ignore_index=True)
