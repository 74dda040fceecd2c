"""Steerability of a ranking: how much of a user's list satisfies a request in natural language.

For each test user and each of the grid's request templates (`steer.templates`, e.g. "something
from the {decade}", "a {genres}"), the request is written from the user's target item's metadata
(`llm4rec.data.requests`, never its title) and its constraint set C(request) is the catalogue items
that satisfy the attributes it names (a shared genre, the same decade). Per user and template:

- `steer_<t>_at_<k>`: the share of the top-k inside C(request) (the list as the model ranked it,
  with or without reading the request; of its first k items, fewer when the list is shorter);
- `filtered_<t>_<metric>`: the metric of the ranking post-filtered to C(request) (the items of its
  ranked list inside C, in their order): the strongest fair reference for a model that cannot read
  text, steerable by construction. It re-ranks the model's own list, the whole of it (a decoded
  row's 10 items, a full row's 50), so a target below the cutoff moves up when items above it
  leave (EVALUATOR_VERSION 2; version 1 filtered only the first max-cutoff items);

NaN where the target lacks an attribute the template names (no request can be written). The
target always satisfies its own request, so post-filtering never removes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from llm4rec.data.requests import RequestTemplate, decade, genre_list
from llm4rec.evaluation.metrics import hit_matrix, per_user_metrics


def constraint_matrix(
    items: pd.DataFrame, requested: Sequence[str], template: RequestTemplate
) -> np.ndarray:
    """Boolean [requests, catalogue items]: does the item satisfy the request written from the
    item `requested[r]` (`matches`, vectorised); rows of items with a missing attribute are all
    False."""
    for name in (template.genres_field, template.year_field):
        if name not in items:
            raise ValueError(
                f"items.parquet has no field '{name}' (request template '{template.template}')"
            )
    index = {item: row for row, item in enumerate(items["item_id"])}
    wanted = [index[item] for item in requested]
    keep = np.ones((len(wanted), len(items)), dtype=bool)
    if "genres" in template.placeholders:
        genres = [set(genre_list(g)) for g in items[template.genres_field]]
        vocabulary = sorted(set().union(*genres))
        column = {g: c for c, g in enumerate(vocabulary)}
        has = np.zeros((len(items), len(vocabulary)), dtype=bool)
        for row, names in enumerate(genres):
            has[row, [column[g] for g in names]] = True
        keep &= (has[wanted].astype(np.int32) @ has.T.astype(np.int32)) > 0
        keep &= has[wanted].any(axis=1)[:, None]
    if "decade" in template.placeholders:
        decades = np.array([decade(y) for y in items[template.year_field]], dtype=object)
        keep &= (decades[wanted][:, None] == decades[None, :]) & (decades[wanted] != "")[:, None]
    return keep


def steer_frame(
    lists: Mapping[str, Sequence[str]],
    targets: Mapping[str, Sequence[str]],
    items: pd.DataFrame,
    templates: Mapping[str, RequestTemplate],
    cutoffs: Sequence[int],
) -> pd.DataFrame:
    """Per user (sorted) and template: steerability at each cutoff and the post-filtered ranking's
    metrics (module doc)."""
    users = sorted(targets)
    depth = max(cutoffs)
    position = {item: col for col, item in enumerate(items["item_id"])}
    columns: dict[str, np.ndarray] = {}
    for name, template in templates.items():
        allowed = constraint_matrix(items, [targets[u][0] for u in users], template)
        writable = allowed.any(axis=1)  # a request needs every attribute its template names
        # per user, each item of the whole ranked list: inside C(request)?
        whole = [
            [bool(allowed[row, position[i]]) for i in lists.get(u, [])]
            for row, u in enumerate(users)
        ]
        inside = [flags[:depth] for flags in whole]
        for k in cutoffs:
            share = np.array(
                [sum(flags[:k]) / len(flags[:k]) if flags else np.nan for flags in inside],
                dtype=np.float64,
            )
            columns[f"steer_{name}_at_{k}"] = np.where(writable, share, np.nan)
        # the whole list filtered (an item below the cutoff moves up when items above it leave)
        filtered = [
            [i for i, ok in zip(lists.get(u, []), flags, strict=True) if ok]
            for u, flags in zip(users, whole, strict=True)
        ]
        hits = hit_matrix(filtered, [targets[u] for u in users], depth)
        metrics = per_user_metrics(hits, np.array([len(targets[u]) for u in users]), cutoffs)
        for metric, values in metrics.items():
            columns[f"filtered_{name}_{metric}"] = np.where(writable, values, np.nan)
    return pd.DataFrame({"user_id": users, **columns})
