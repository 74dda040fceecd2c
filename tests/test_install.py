"""The GPU install path (llm4rec/install.py, the Makefile): which torch build `make env` installs
on what machine, and the GPU resource `make bench` gives Snakemake; tested on CPU with recorded
`nvidia-smi` output."""

import subprocess
from pathlib import Path

import pytest

from llm4rec.install import TORCH_VERSION, choose_build, count_gpus, driver_cuda, torch_args

REPO = Path(__file__).resolve().parents[1]
H100_SMI = """
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |
|-----------------------------------------+------------------------+----------------------+
"""
OLD_SMI = "| NVIDIA-SMI 525.60.13    Driver Version: 525.60.13    CUDA Version: 12.0     |"
H100_LIST = (
    "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb)\n"
)


def test_the_build_follows_the_driver_and_the_request():
    assert driver_cuda(H100_SMI) == (12, 8) and driver_cuda("") is None
    assert choose_build(None, None) == "cpu"  # no nvidia-smi
    assert choose_build(H100_SMI, None) == "cu128"  # the newest build the driver runs
    assert choose_build(OLD_SMI, None) == "cpu"  # a driver older than every build
    assert choose_build(H100_SMI, "cu126") == "cu126" and choose_build(H100_SMI, "cpu") == "cpu"
    with pytest.raises(ValueError, match="TORCH_CUDA 'cu999' is not cpu or one of the builds"):
        choose_build(None, "cu999")


def test_pip_reinstalls_torch_only_when_the_installed_build_is_not_the_chosen_one():
    """`2.13.0+cpu` satisfies `==2.13.0`, so pip alone would keep a CPU build on a GPU machine."""
    cuda = [
        "--extra-index-url",
        "https://download.pytorch.org/whl/cu128",
        f"torch=={TORCH_VERSION}+cu128",
    ]
    assert torch_args("cu128", None) == cuda
    assert torch_args("cu128", f"{TORCH_VERSION}+cpu") == ["--force-reinstall", *cuda]
    assert torch_args("cu128", f"{TORCH_VERSION}+cu128") == cuda
    assert (
        torch_args("cpu", None)
        == torch_args("cpu", f"{TORCH_VERSION}+cpu")
        == [f"torch=={TORCH_VERSION}"]
    )
    assert torch_args("cpu", f"{TORCH_VERSION}+cu128")[0] == "--force-reinstall"


def test_make_bench_gives_snakemake_the_gpus_it_found():
    """`make bench CONFIG=benchmarks/paper.yaml` (dry: make -n) on a machine with 2 GPUs hands
    Snakemake gpu=2, so GPU jobs do not share one; with none, no gpu resource at all."""
    assert count_gpus(H100_LIST) == 2 and count_gpus(None) == 0

    def command(gpus: str) -> str:
        out = subprocess.run(
            ["make", "-n", "bench", "CONFIG=benchmarks/paper.yaml", f"GPUS={gpus}"],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return next(line for line in out.splitlines() if "snakemake all" in line)

    assert "--resources mlflow=1 gpu=2 --config grid=benchmarks/paper.yaml" in command("2")
    assert "--resources mlflow=1 --config grid=benchmarks/paper.yaml" in command("0")
