"""Explicit preprocessing: implicit-feedback threshold, de-duplication, k-core filtering."""

from __future__ import annotations

import numpy as np
import pandas as pd

from llm4rec.data.atomic import DataError


def to_implicit(interactions: pd.DataFrame, rating_threshold: float | None) -> pd.DataFrame:
    """Keep interactions with rating >= threshold (None keeps every interaction as positive)."""
    if rating_threshold is None:
        return interactions
    if interactions["rating"].isna().all():
        raise DataError(
            f"rating_threshold={rating_threshold} is set but the dataset has no 'rating' field"
        )
    return interactions[interactions["rating"] >= rating_threshold]


def deduplicate(interactions: pd.DataFrame, keep: str) -> pd.DataFrame:
    """One interaction per (user, item): the earliest ('first'), latest ('last') or all ('none')."""
    if keep == "none":
        return interactions
    ordered = interactions.sort_values(["timestamp", "order"], kind="stable")
    kept = ordered.drop_duplicates(["user_id", "item_id"], keep=keep)
    return kept.sort_values("order", kind="stable")


def k_core(interactions: pd.DataFrame, min_user: int, min_item: int) -> pd.DataFrame:
    """Iteratively drop users with < min_user and items with < min_item interactions."""
    df = interactions
    while True:
        user_counts = df["user_id"].map(df["user_id"].value_counts())
        item_counts = df["item_id"].map(df["item_id"].value_counts())
        keep = (user_counts >= min_user) & (item_counts >= min_item)
        if keep.all():
            return df
        df = df[keep]


def preprocess(
    interactions: pd.DataFrame,
    *,
    rating_threshold: float | None,
    dedup: str,
    min_user: int,
    min_item: int,
    dataset: str,
    sample_users: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Apply threshold -> dedup -> [a seeded sample of users] -> k-core; return the kept
    interactions and a count report."""
    report = {"raw_interactions": len(interactions)}
    df = to_implicit(interactions, rating_threshold)
    report["after_threshold"] = len(df)
    df = deduplicate(df, dedup)
    report["after_dedup"] = len(df)
    if sample_users is not None:
        users = np.sort(df["user_id"].unique())
        if sample_users < len(users):
            kept = np.random.default_rng(seed).choice(users, size=sample_users, replace=False)
            df = df[df["user_id"].isin(set(kept))]
        report["after_user_sample"] = len(df)
    df = k_core(df, min_user, min_item)
    report["after_k_core"] = len(df)
    if df.empty:
        raise DataError(
            f"dataset '{dataset}': no interactions left after preprocessing "
            f"(rating_threshold={rating_threshold}, dedup={dedup}, k_core user>={min_user} "
            f"item>={min_item}); counts: {report}"
        )
    return df.reset_index(drop=True), report
