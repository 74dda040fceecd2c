"""The hub assets a grid loads (backbones and text encoders named by a Hugging Face hub id), put
into the local Hugging Face cache before the jobs start: `llm4rec fetch --config GRID`.

A cluster's compute nodes often have no network, and a hundred jobs starting at once should not
each download the same backbone. So `llm4rec fetch` runs once where there is network (the login
node; `make bench` runs it first), downloading every asset at its pinned revision into the cache
(`HF_HOME`, shared by the nodes); the jobs then run with `HF_HUB_OFFLINE=1`, and a job that would
load an asset missing from the cache refuses to start, naming the asset and the command that
fetches it (`require`, called by `llm4rec train` and `llm4rec artifact`). `--check` only reports.

An asset is found in the grid's resolved configurations: every `BackboneConfig` (a model's own, an
artifact's) and every text encoder (`EncoderConfig`: a sentence encoder or a backbone) whose source
is neither a packaged alias (SmolLM2's GGUF, all-MiniLM-L6-v2) nor a local folder.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from llm4rec.config import ConfigError, Grid
from llm4rec.models import ARTIFACTS, MODELS, check_params


@dataclass(frozen=True)
class HubAsset:
    repo_id: str
    revision: str | None  # None: the hub's newest (a grid should pin it)
    used_by: tuple[str, ...]  # "model <name>" / "artifact <name>", sorted

    def __str__(self) -> str:
        at = f" at revision {self.revision}" if self.revision else " (no revision pinned)"
        return f"{self.repo_id}{at}, for {', '.join(self.used_by)}"


def _is_hub_id(source: str) -> bool:
    return not source.startswith((".", "/", "~")) and not Path(source).expanduser().exists()


def _sources(config) -> list[tuple[str, str | None]]:
    """(hub id, revision) of every backbone or encoder inside a resolved config (dataclasses)."""
    from llm4rec.llm.backbone import BackboneConfig, resolve
    from llm4rec.llm.text_encoders import MINILM, EncoderConfig

    if isinstance(config, BackboneConfig):
        source, gguf = resolve(config)
        return [(source, config.revision)] if not gguf and _is_hub_id(source) else []
    if isinstance(config, EncoderConfig):
        if config.kind == "backbone":  # loaded as a backbone: its aliases too
            return _sources(BackboneConfig(name_or_path=config.model, revision=config.revision))
        return (
            [] if config.model == MINILM or not _is_hub_id(config.model) else [(config.model, None)]
        )
    if dataclasses.is_dataclass(config):
        return [s for f in dataclasses.fields(config) for s in _sources(getattr(config, f.name))]
    return []


def hub_assets(grid: Grid, dataset: str | None = None, model: str | None = None) -> list[HubAsset]:
    """The hub assets of the grid (or of one dataset and model: its own and its artifacts')."""
    found: dict[tuple[str, str | None], set[str]] = {}
    datasets = [dataset] if dataset else grid.datasets
    models = [model] if model else grid.models
    for d in datasets:
        for m in models:
            if d not in grid.model_datasets(m):
                continue
            for source in _sources(check_params(MODELS[m], grid.model_params(m, d))):
                found.setdefault(source, set()).add(f"model {m}")
            for slot in grid.model_inputs(m).values():
                if "artifact" in slot:
                    name = slot["artifact"]
                    config = check_params(ARTIFACTS[name], slot.get("params", {}))
                    for source in _sources(config):
                        found.setdefault(source, set()).add(f"artifact {name}")
    return [HubAsset(r, v, tuple(sorted(u))) for (r, v), u in sorted(found.items(), key=str)]


def missing(assets: list[HubAsset]) -> list[HubAsset]:
    """The assets not in the local Hugging Face cache (at their revision)."""
    from huggingface_hub import snapshot_download

    absent = []
    for asset in assets:
        try:
            snapshot_download(asset.repo_id, revision=asset.revision, local_files_only=True)
        except Exception:  # noqa: BLE001 (LocalEntryNotFoundError, or an offline error)
            absent.append(asset)
    return absent


def require(grid: Grid, dataset: str, model: str | None = None) -> None:
    """Under HF_HUB_OFFLINE=1, refuse to start a job whose hub assets are not in the cache."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes"):
        return
    absent = missing(hub_assets(grid, dataset, model))
    if absent:
        raise ConfigError(
            f"{grid.path}: HF_HUB_OFFLINE is set and the local Hugging Face cache "
            f"({cache_dir()}) lacks "
            + "; ".join(str(a) for a in absent)
            + f". Fetch them where there is network first: llm4rec fetch --config {grid.path}"
        )


def cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def fetch(grid: Grid, check_only: bool = False) -> list[HubAsset]:
    """Download every hub asset of the grid into the cache (at its revision); returns those that
    are still missing (all of them missing ones with `check_only`)."""
    assets = hub_assets(grid)
    if check_only:
        return missing(assets)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ConfigError("llm4rec fetch downloads: unset HF_HUB_OFFLINE for this command")
    from huggingface_hub import snapshot_download

    for asset in missing(assets):  # what the cache holds is not asked for again
        print(f"[llm4rec] fetching {asset}", flush=True)
        snapshot_download(asset.repo_id, revision=asset.revision)
    return missing(assets)
