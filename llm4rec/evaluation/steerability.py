"""Steerability of a ranking: how much of a user's list satisfies a request in natural language.

For each test user and each of the grid's request templates (`steer.templates`, e.g. "something
from the {decade}", "a {genres}"), two requests (llm4rec.data.requests, never a title):

- oracle: written from the user's target (its genres, its decade). The target satisfies it and its
  constraint set C can be small, so it is an upper bound, never an accuracy result;
- counterfactual: a genre and/or decade drawn from the catalogue's distribution that the target
  does not have (seeded per user): NEO's steerability, control of the list by an instruction that
  does not come from the target.

Per user, template and kind (`cf_` prefix: counterfactual):

- `steer_<t>_at_<k>`: the share of the top-k inside C(request) (the list as the model ranked it,
  with or without reading the request; of its first k items, fewer when the list is shorter);
- `chance_<t>`: the chance rate, the share of the user's candidates (catalogue minus history)
  inside C: what a random list scores in expectation;
- `lift_<t>_at_<k>`: share / chance (1: no better than chance; 1 / chance: every item in C);
- oracle only, `filtered_<t>_<metric>`: the metric of the list's first `filter_depth` items (10 by
  default, the same depth for every model: a decoded row's list is 10 deep, a one-forward row's 50)
  post-filtered to C, in their order: the request-aware reference a model that cannot read text
  gets. The target satisfies its own oracle request, so filtering never removes it: at its own
  depth the filtered list has the same hits, moved up (EVALUATOR_VERSION 3; version 2 filtered
  the whole list, so a 50-deep list gained targets from ranks 11-50 that a 10-deep one could not).

NaN where the target lacks an attribute the template names (no request of either kind), and for
the counterfactual request where no attribute value is left to draw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from llm4rec.data.requests import (
    AttributeDistribution,
    Request,
    RequestTemplate,
    counterfactual_request,
    decade,
    genre_list,
    item_request,
)
from llm4rec.evaluation.metrics import hit_matrix, per_user_metrics

FILTER_DEPTH = 10  # the post-filter's common depth (evaluation.steer.filter_depth)


def request_matrix(
    items: pd.DataFrame, requests: Sequence[Request | None], template: RequestTemplate
) -> np.ndarray:
    """Boolean [requests, catalogue items]: does the item satisfy the request (shares one of its
    genres where the template names {genres}; is of its decade where it names {decade})? A None
    request, or one missing an attribute the template names, allows nothing."""
    for name in (template.genres_field, template.year_field):
        if name not in items:
            raise ValueError(
                f"items.parquet has no field '{name}' (request template '{template.template}')"
            )
    keep = np.array([r is not None and bool(r.wording(template)) for r in requests], dtype=bool)
    keep = np.repeat(keep[:, None], len(items), axis=1)
    if "genres" in template.placeholders:
        genres = [set(genre_list(g)) for g in items[template.genres_field]]
        vocabulary = sorted(set().union(*genres))
        column = {g: c for c, g in enumerate(vocabulary)}
        has = np.zeros((len(items), len(vocabulary)), dtype=np.int32)
        for row, names in enumerate(genres):
            has[row, [column[g] for g in names]] = 1
        wanted = np.zeros((len(requests), len(vocabulary)), dtype=np.int32)
        for row, request in enumerate(requests):
            known = [column[g] for g in (request.genres if request else ()) if g in column]
            wanted[row, known] = 1
        keep &= (wanted @ has.T) > 0
    if "decade" in template.placeholders:
        decades = np.array([decade(y) for y in items[template.year_field]], dtype=object)
        asked = np.array([r.decade if r else "" for r in requests], dtype=object)
        keep &= (asked[:, None] == decades[None, :]) & (asked != "")[:, None]
    return keep


def constraint_matrix(
    items: pd.DataFrame, requested: Sequence[str], template: RequestTemplate
) -> np.ndarray:
    """Boolean [requests, catalogue items] for the oracle requests written from the items
    `requested` (`request_matrix`; tested against `llm4rec.data.requests.matches`)."""
    for name in (template.genres_field, template.year_field):
        if name not in items:
            raise ValueError(
                f"items.parquet has no field '{name}' (request template '{template.template}')"
            )
    rows = items.set_index(items["item_id"].astype(str), drop=False)
    requests = [item_request(rows.loc[str(item)], template) for item in requested]
    return request_matrix(items, requests, template)


def _shares(
    lists: Sequence[Sequence[str]],
    allowed: np.ndarray,
    position: Mapping[str, int],
    cutoffs: Sequence[int],
) -> dict[int, np.ndarray]:
    """Per cutoff k: each user's share of its first k items inside its row of `allowed` (NaN for an
    empty list)."""
    inside = [
        [bool(allowed[row, position[item]]) for item in items[: max(cutoffs)]]
        for row, items in enumerate(lists)
    ]
    return {
        k: np.array(
            [sum(flags[:k]) / len(flags[:k]) if flags else np.nan for flags in inside],
            dtype=np.float64,
        )
        for k in cutoffs
    }


def chance_rates(allowed: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Per user: the share of its candidates (catalogue items outside its history, a [users, items]
    boolean) inside C (its row of `allowed`)."""
    candidates = ~history
    return (allowed & candidates).sum(axis=1) / np.maximum(candidates.sum(axis=1), 1)


def steer_frame(
    lists: Mapping[str, Sequence[str]],
    targets: Mapping[str, Sequence[str]],
    items: pd.DataFrame,
    templates: Mapping[str, RequestTemplate],
    cutoffs: Sequence[int],
    histories: Mapping[str, Sequence[str]] | None = None,
    filter_depth: int = FILTER_DEPTH,
    counterfactual_seed: int = 0,
    counterfactual_lists: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Per user (sorted) and template: the oracle and counterfactual requests' steerability,
    chance rates and lifts, and the oracle post-filter's metrics (module doc). `histories`: each
    user's history (the chance rate's candidates exclude it; none: the whole catalogue);
    `counterfactual_lists`: the lists a model ranked with the counterfactual requests (a model that
    reads requests), else `lists` are scored against them too."""
    users = sorted(targets)
    position = {str(item): col for col, item in enumerate(items["item_id"].astype(str))}
    history = np.zeros((len(users), len(items)), dtype=bool)
    for row, user in enumerate(users):
        history[row, [position[str(i)] for i in (histories or {}).get(user, ())]] = True
    ranked = [[str(i) for i in lists.get(u, [])] for u in users]
    ranked_cf = (
        ranked
        if counterfactual_lists is None
        else [[str(i) for i in counterfactual_lists.get(u, [])] for u in users]
    )
    by_id = items.set_index(items["item_id"].astype(str), drop=False)
    columns: dict[str, np.ndarray] = {}
    for name, template in templates.items():
        oracle = [item_request(by_id.loc[str(targets[u][0])], template) for u in users]
        oracle = [r if r.wording(template) else None for r in oracle]
        distribution = AttributeDistribution.of(items, template)
        counterfactual = [
            counterfactual_request(r, distribution, template, u, counterfactual_seed)
            if r is not None
            else None
            for r, u in zip(oracle, users, strict=True)
        ]
        for prefix, requests, scored in (("", oracle, ranked), ("cf_", counterfactual, ranked_cf)):
            allowed = request_matrix(items, requests, template)
            writable = np.array([r is not None for r in requests])
            chance = np.where(writable, chance_rates(allowed, history), np.nan)
            columns[f"{prefix}chance_{name}"] = chance
            for k, share in _shares(scored, allowed, position, cutoffs).items():
                share = np.where(writable, share, np.nan)
                columns[f"{prefix}steer_{name}_at_{k}"] = share
                with np.errstate(divide="ignore", invalid="ignore"):
                    columns[f"{prefix}lift_{name}_at_{k}"] = np.where(
                        chance > 0, share / chance, np.nan
                    )
            if prefix:
                columns[f"cf_request_{name}"] = np.array(
                    [r.wording(template) if r is not None else "" for r in requests], dtype=object
                )
                continue
            # the first filter_depth items of the list, filtered to C in their order
            filtered = [
                [i for i in items_[:filter_depth] if allowed[row, position[i]]]
                for row, items_ in enumerate(scored)
            ]
            hits = hit_matrix(filtered, [targets[u] for u in users], max(cutoffs))
            metrics = per_user_metrics(hits, np.array([len(targets[u]) for u in users]), cutoffs)
            for metric, values in metrics.items():
                columns[f"filtered_{name}_{metric}"] = np.where(writable, values, np.nan)
    return pd.DataFrame({"user_id": users, **columns})
