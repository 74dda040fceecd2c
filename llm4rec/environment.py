"""What a run ran on: package versions, hardware, git commit (logged with every run)."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

from llm4rec.config import REPO_ROOT

PACKAGES = ("llm4rec-bench", "torch", "recbole", "numpy", "pandas", "scipy", "mlflow", "snakemake", "transformers", "peft")


def git_commit() -> str:
    """HEAD's commit, with '-dirty' when tracked files differ from it ('unknown' outside git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info
