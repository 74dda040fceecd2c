"""Which torch build `make env` installs, and how many GPUs `make bench` offers the workflow.

Run by the Makefile with the system Python before the environment exists, so it imports nothing
outside the standard library:

    python3 llm4rec/install.py build                               # cpu, or a CUDA tag (cu128)
    python3 llm4rec/install.py torch-args [--installed VERSION]   # pip arguments for torch
    python3 llm4rec/install.py gpus                                # GPUs on this machine (0: none)

The build: `TORCH_CUDA` when set (`cpu`, or a CUDA tag such as `cu128`); else a CUDA build when
`nvidia-smi` reports a driver, the newest of `CUDA_BUILDS` the driver supports; else the CPU build.
A CUDA build comes from PyTorch's own index (`https://download.pytorch.org/whl/<tag>`, an extra
index: the dependencies come from the usual one) as `torch==<version>+<tag>`; the CPU build is the
plain `torch==<version>` of the configured index (here, the local CPU wheel). An installed torch
of the same version but another build satisfies `==<version>` for pip, which would then do
nothing: `--force-reinstall` is added whenever the installed build is not the chosen one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

TORCH_VERSION = "2.13.0"  # constraints.txt's pin
# the CUDA builds PyTorch publishes for TORCH_VERSION, oldest first, with the CUDA version each
# needs from the driver (assumed from PyTorch's release pattern: check the index when bumping torch)
CUDA_BUILDS = (("cu126", (12, 6)), ("cu128", (12, 8)), ("cu130", (13, 0)))
TORCH_INDEX = "https://download.pytorch.org/whl"


def driver_cuda(nvidia_smi: str) -> tuple[int, int] | None:
    """The CUDA version a driver supports, from `nvidia-smi`'s banner ("CUDA Version: 12.8")."""
    found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", nvidia_smi)
    return (int(found.group(1)), int(found.group(2))) if found else None


def choose_build(nvidia_smi: str | None, requested: str | None) -> str:
    """`cpu` or a CUDA tag: `requested` (TORCH_CUDA) when given, else the newest CUDA build the
    driver supports, else `cpu` (no driver, or one too old for every build)."""
    known = [tag for tag, _ in CUDA_BUILDS]
    if requested:
        if requested != "cpu" and requested not in known:
            raise ValueError(
                f"TORCH_CUDA '{requested}' is not cpu or one of the builds of torch "
                f"{TORCH_VERSION}: {', '.join(known)}"
            )
        return requested
    supported = driver_cuda(nvidia_smi or "")
    if supported is None:
        return "cpu"
    usable = [tag for tag, needs in CUDA_BUILDS if needs <= supported]
    return usable[-1] if usable else "cpu"


def torch_args(build: str, installed: str | None) -> list[str]:
    """pip install arguments for torch `build`, given the installed torch version (None: none)."""
    if build == "cpu":
        args = [f"torch=={TORCH_VERSION}"]
        wrong = installed is not None and "+" in installed and not installed.endswith("+cpu")
    else:  # the PyTorch index for torch alone; its dependencies from the usual index
        args = ["--extra-index-url", f"{TORCH_INDEX}/{build}", f"torch=={TORCH_VERSION}+{build}"]
        wrong = installed is not None and installed != f"{TORCH_VERSION}+{build}"
    return (["--force-reinstall"] if wrong else []) + args


def count_gpus(nvidia_smi_list: str | None) -> int:
    """GPUs listed by `nvidia-smi -L` (one "GPU n: ..." line each)."""
    return sum(1 for line in (nvidia_smi_list or "").splitlines() if line.startswith("GPU "))


def _run(*command: str) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str]) -> int:
    if argv[:1] == ["torch-args"]:
        installed = argv[argv.index("--installed") + 1] if "--installed" in argv else None
        build = choose_build(_run("nvidia-smi"), os.environ.get("TORCH_CUDA") or None)
        print(" ".join(torch_args(build, installed or None)))
        return 0
    if argv[:1] == ["build"]:
        print(choose_build(_run("nvidia-smi"), os.environ.get("TORCH_CUDA") or None))
        return 0
    if argv[:1] == ["gpus"]:
        print(count_gpus(_run("nvidia-smi", "-L")))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
