"""What a run ran on: package versions, hardware, git commit (logged with every run)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from typing import Any

from llm4rec.config import REPO_ROOT

# environment variables that can change a run's result or say where it ran (logged with it)...
RECORDED_VARIABLES = re.compile(
    r"^(LLM4REC_|OMP_|MKL_|OPENBLAS_|ATEN_|ONEDNN_|DNNL_|CUDA_|CUBLAS_|PYTORCH_|HF_|"
    r"TRANSFORMERS_|MLFLOW_|SLURM_JOB_|PYTHONHASHSEED$)"
)
# ...except those that look like credentials: never written to run.json, MLflow params or tags
SECRET_NAME = re.compile(r"TOKEN|KEY|PASSWORD|SECRET|CREDENTIAL", re.I)
PACKAGES = (
    "llm4rec-bench",
    "torch",
    "recbole",
    "numpy",
    "pandas",
    "scipy",
    "mlflow",
    "snakemake",
    "transformers",
    "peft",
)


def git_commit() -> str:
    """HEAD's commit, with '-dirty' when tracked files differ from it ('unknown' outside git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def recorded_variables() -> dict[str, str]:
    """The environment variables a run records: those that shape results, none that look secret."""
    return {
        k: v
        for k, v in sorted(os.environ.items())
        if RECORDED_VARIABLES.match(k) and not SECRET_NAME.search(k)
    }


def secret_values() -> list[str]:
    """Values of environment variables named like credentials (`*TOKEN*`, `*KEY*`, ...)."""
    return sorted(
        {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 4},
        key=len,
        reverse=True,
    )


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """`obj` with every secret value (and a URL's password) replaced by '***', at any depth."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, secrets) for v in obj)
    if isinstance(obj, str):
        obj = re.sub(r"(://[^/@:\s]+:)[^/@\s]+@", r"\1***@", obj)
        for secret in secrets:
            obj = obj.replace(secret, "***")
    return obj


def environment() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
        "git_commit": git_commit(),
        "variables": recorded_variables(),
    }
    info |= cpu()
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["cuda_version"] = torch.version.cuda
        # the kernels ATen dispatched to
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["blas"] = blas_libraries()
    except ImportError:
        pass
    return info


# instruction-set extensions that change which float kernels run (so the last bits of results)
_ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "asimd",
    "sve",
)


def cpu() -> dict[str, Any]:
    """The CPU model and its float-relevant instruction sets (Linux: /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in (
                    "",
                    platform.machine(),
                    platform.processor(),
                ):
                    model = value.strip()
                elif key.strip() in ("flags", "Features"):
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"cpu_model": model, "cpu_flags": [f for f in _ISA_FLAGS if f in flags]}


def blas_libraries() -> dict[str, str]:
    """torch's BLAS (and oneDNN) as built, and numpy's BLAS with its kernel and thread count."""
    import torch

    config = torch.__config__.show()
    out = {}
    for label, pattern in (
        ("torch_blas", r"BLAS_INFO=(\w+)"),
        ("torch_mkl", r"Math Kernel Library Version ([\w.-]+)"),
        ("torch_onednn", r"MKL-DNN v([\w.]+)"),
    ):
        match = re.search(pattern, config)
        if match:
            out[label] = match.group(1)
    try:
        from threadpoolctl import threadpool_info

        # numpy's own (scipy's, when loaded, is another library: not stable to record)
        for pool in threadpool_info():
            if pool.get("user_api") == "blas" and "numpy" in str(pool.get("filepath", "")):
                out["numpy_blas"] = (
                    f"{pool.get('internal_api')} {pool.get('version')} "
                    f"({pool.get('architecture')}, {pool.get('num_threads')} threads)"
                )
                break
    except ImportError:
        pass
    return out
