"""The switches that make a run's numbers a function of its inputs alone, and the record of them.

Same code, same config, same machine kind and thread count -> bit-identical weights, rankings
and metrics, whatever else runs on the machine. What breaks that without these switches:

- Parallel CPU kernels that accumulate with atomic adds. Backward of an advanced-index gather
  (`items[ids]`, e.g. IDIOMoE's item embedding) is `index_put_(accumulate=True)`, which on 2+
  threads adds duplicate rows in whatever order the threads race: another process sharing the
  cores changed IDIOMoE's gradients and so its metrics (issue 23; `benchmarks/perf/determinism.py`
  shows it). `torch.use_deterministic_algorithms(True)` makes such kernels serial.
- cuDNN autotuning and cuBLAS workspaces on CUDA (`CUBLAS_WORKSPACE_CONFIG`).
- The thread count: a reduction split over another number of threads sums in another order.
  The grid fixes it per model (`threads`), for torch and numpy's BLAS alike, and the record says
  what it was.

Python's hash seed must not matter: nothing orders by iterating a set or dict of strings
(tests rerun every model under two different PYTHONHASHSEED values).
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# cuBLAS picks its reduction split by workspace; a fixed config makes its GEMMs reproducible
# (NVIDIA's cuBLAS docs, "Results reproducibility"); must be set before the first CUDA call.
CUBLAS_WORKSPACE = ":4096:8"
# torch's words when an op without a deterministic version runs under warn_only
_NONDETERMINISTIC = re.compile(r"^(\S+) does not have a deterministic implementation")


def apply_determinism(threads: int, device: str = "cpu") -> None:
    """Turn every determinism switch on for this process, before any model is built
    (`determinism_record` says afterwards what was on)."""
    import torch

    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    # warn (and we record) where an op has no such version
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.set_num_threads(threads)
    # numpy's BLAS too (k-means, kNN): Snakemake sets OPENBLAS_NUM_THREADS per job, a plain
    # process does not
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


def determinism_record(nondeterministic_ops: list[str] | None = None) -> dict[str, Any]:
    """Which switches were on in this process: run.json's `determinism`."""
    import torch

    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "python_hash_seed": os.environ.get(
            "PYTHONHASHSEED", "random" if sys.flags.hash_randomization else "0"
        ),
        "nondeterministic_ops": sorted(set(nondeterministic_ops or [])),
    }


@contextmanager
def recording_nondeterministic_ops() -> Iterator[list[str]]:
    """Collect the names of ops that ran without a deterministic implementation (torch warns
    once per op under warn_only); every other warning passes through unchanged."""
    seen: list[str] = []
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        match = _NONDETERMINISTIC.match(str(message))
        if match:
            if match.group(1) not in seen:
                seen.append(match.group(1))
                print(
                    f"[llm4rec] warning: {match.group(1)} has no deterministic implementation; "
                    "this run may not rerun bit-identically (recorded in run.json "
                    "determinism.nondeterministic_ops)",
                    flush=True,
                )
            return
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("always", message=_NONDETERMINISTIC.pattern)
            yield seen
    finally:
        warnings.showwarning = shown


def state_digest(tensors: dict[str, Any]) -> str:
    """sha256 over named tensors (name, dtype, shape and bytes, in name order): equal digests
    mean bit-identical weights."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name]
        if not isinstance(value, torch.Tensor):
            continue
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy() if tensor.numel() else b"")
    return digest.hexdigest()


def weights_digest(recommender: Any) -> str | None:
    """The digest of a fitted recommender's weights (`model.state_dict()`, or `net`'s); None for
    a model without a torch module (e.g. a kNN over consumed embeddings)."""
    import torch

    model = getattr(recommender, "model", None)
    if not isinstance(model, torch.nn.Module):  # a native baseline keeps its network as `net`
        model = getattr(recommender, "net", None)
    if not isinstance(model, torch.nn.Module):
        return None
    return state_digest(model.state_dict())
