"""The steer tables (llm4rec.report.steer_table) on constructed runs: every number by hand, each
share tested against its chance rate, the steered row against its parent on the users and seeds both
have and against MostPop's list post-filtered to C (p-values as scipy's `ttest_rel`, Holm by hand
over every test of the table), and a steered row worded unlike the table's template refused."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from llm4rec.io import write_json, write_parquet
from llm4rec.report.compare import CompareSpec
from llm4rec.report.runs import RunRecord
from llm4rec.report.steer_table import render_steer, steer_table_frame
from llm4rec.report.tables import Style

WORDING = "something from the {decade}: {genres}"
USERS = [f"u{i}" for i in range(8)]
NAN = np.nan
CHANCE = [0.2, 0.25, 0.3, 0.2, 0.1, 0.4, 0.3, 0.2]  # each user's oracle chance rate
CF_CHANCE = [0.1, 0.2, 0.1, 0.3, 0.2, 0.1, 0.1, NAN]  # u7: no counterfactual request


def _run(root, model, paradigm, seed, columns, request=None, trained=False) -> RunRecord:
    folder = root / model / f"seed{seed}"
    frame = pd.DataFrame({"user_id": USERS, "chance_both": CHANCE, "cf_chance_both": CF_CHANCE})
    write_parquet(folder / "per_user_test.parquet", frame.assign(**columns))
    write_json(folder / "run.json", {"fit": {"trained_with_requests": trained}})
    evaluation = {"requests": {"template": request}} if request else {}
    write_json(
        folder / "metrics.json",
        {"evaluation": evaluation, "steer": {"templates": {"both": WORDING}, "cutoffs": [10]}},
    )
    return RunRecord("d", model, paradigm, seed, folder)


def _columns(ndcg, hr, steer, cf_steer, f_ndcg=None, f_hr=None):
    out = {
        "ndcg_at_10": ndcg,
        "hr_at_10": hr,
        "steer_both_at_10": steer,
        "cf_steer_both_at_10": cf_steer,
    }
    if f_ndcg is not None:
        out |= {"filtered_both_ndcg_at_10": f_ndcg, "filtered_both_hr_at_10": f_hr}
    return out


@pytest.fixture
def runs(tmp_path):
    # idiomoe at seeds 0 and 1; its steered row at seed 0 only: the pair is read on seed 0
    parent0 = _columns(
        [0.1, 0.2, 0.0, 0.5, 0.3, 0.0, 0.1, 0.9],
        [1, 1, 0, 1, 1, 0, 1, 1],
        [0.2, 0.1, 0.3, 0.0, 0.4, 0.2, 0.1, NAN],  # u7: no oracle request either
        [0.1, 0.3, 0.0, 0.2, 0.1, 0.2, 0.0, NAN],
        [0.2, 0.3, 0.0, 0.6, 0.4, 0.1, 0.1, 0.9],
        [1, 1, 0, 1, 1, 1, 1, 1],
    )
    parent1 = {k: [9.0] * 8 for k in parent0}  # a seed the steered row lacks: never read
    steered = _columns(
        [0.3, 0.2, 0.1, 0.6, 0.3, 0.2, 0.2, 0.0],
        [1, 1, 1, 1, 1, 1, 1, 0],
        [0.6, 0.5, 0.7, 0.3, 0.8, 0.5, 0.6, NAN],
        [0.5, 0.4, 0.6, 0.7, 0.3, 0.5, 0.4, NAN],
    )
    baseline = _columns(
        [0.5] * 8, [1] * 8, [0.5] * 7 + [NAN], [0.2] * 7 + [NAN], [0.75] * 8, [1] * 8
    )
    mostpop = _columns(
        [0.0] * 8,
        [0] * 8,
        [0.3] * 7 + [NAN],
        [0.1] * 7 + [NAN],
        [0.1, 0.0, 0.2, 0.1, 0.3, 0.0, 0.4, 0.0],
        [1, 0, 1, 1, 1, 0, 1, 0],
    )
    return [
        _run(tmp_path, "sasrec", "baseline", 0, baseline),
        _run(tmp_path, "mostpop", "baseline", 0, mostpop),
        _run(tmp_path, "idiomoe", "moe_expert", 0, parent0),
        _run(tmp_path, "idiomoe", "moe_expert", 1, parent1),
        _run(tmp_path, "idiomoe_steer", "moe_expert", 0, steered, request=WORDING),
        _run(tmp_path, "idiomoe_popprior", "moe_expert", 0, parent0),  # a variant: not a row
    ], (parent0, steered, mostpop)


def _holm(p: dict) -> dict:
    order, out, running = sorted(p, key=p.get), {}, 0.0
    for i, key in enumerate(order):
        running = max(running, min(1.0, (len(p) - i) * p[key]))
        out[key] = running
    return out


def test_the_steer_tables_by_hand(runs):
    records, (parent, steered, mostpop) = runs
    spec = CompareSpec(test="t", correction="holm", alpha=0.05)
    frame = steer_table_frame(records, "both", 10, spec)
    indexed = frame.set_index(["model", "condition"])
    assert set(indexed.index) == {
        (m, c) for m in ("sasrec", "mostpop", "idiomoe") for c in ("history", "post-filter")
    } | {("idiomoe", "request")}  # the steered row is printed under its parent, a variant not
    keep = slice(0, 7)  # u0..u6: the users both requests could be written for
    history, request = indexed.loc[("idiomoe", "history")], indexed.loc[("idiomoe", "request")]
    assert history["n_users"] == request["n_users"] == 7 and history["seeds"] == "0"
    mean = lambda values: float(np.mean(np.asarray(values, dtype=float)[keep]))  # noqa: E731
    assert history["ndcg"] == pytest.approx(mean(parent["ndcg_at_10"]))
    assert request["cf_steer"] == pytest.approx(mean(steered["cf_steer_both_at_10"]))
    assert request["cf_chance"] == pytest.approx(mean(CF_CHANCE))
    assert request["cf_lift"] == pytest.approx(
        mean(steered["cf_steer_both_at_10"]) / mean(CF_CHANCE)
    )
    assert request["lift"] == pytest.approx(mean(steered["steer_both_at_10"]) / mean(CHANCE))
    post = indexed.loc[("idiomoe", "post-filter")]
    assert post["ndcg"] == pytest.approx(mean(parent["filtered_both_ndcg_at_10"]))
    assert post["steer"] == 1.0 and post["lift"] == pytest.approx(1 / mean(CHANCE))
    # every test of the table, by hand: each row's share against its chance rate; the request row
    # against history and against MostPop post-filtered
    a = lambda values: np.asarray(values, dtype=float)[keep]  # noqa: E731
    raw = {}
    per_user = {
        ("sasrec", "history"): _columns([0.5] * 8, [1] * 8, [0.5] * 7 + [NAN], [0.2] * 7 + [NAN]),
        ("mostpop", "history"): mostpop,
        ("idiomoe", "history"): parent,
        ("idiomoe", "request"): steered,
    }
    for key, columns in per_user.items():
        raw[(key, "cf_lift")] = stats.ttest_rel(
            a(columns["cf_steer_both_at_10"]), a(CF_CHANCE)
        ).pvalue
        raw[(key, "lift")] = stats.ttest_rel(a(columns["steer_both_at_10"]), a(CHANCE)).pvalue
    for name, column in (
        ("cf_steer", "cf_steer_both_at_10"),
        ("steer", "steer_both_at_10"),
        ("ndcg", "ndcg_at_10"),
        ("hr", "hr_at_10"),
    ):
        raw[(("idiomoe", "request"), name)] = stats.ttest_rel(
            a(steered[column]), a(parent[column])
        ).pvalue
    for name in ("ndcg", "hr"):
        raw[(("idiomoe", "request"), f"{name}_vs_mostpop")] = stats.ttest_rel(
            a(steered[f"{name}_at_10"]), a(mostpop[f"filtered_both_{name}_at_10"])
        ).pvalue
    raw = {k: v for k, v in raw.items() if not np.isnan(v)}  # constant differences: no test
    adjusted = _holm(raw)
    for (key, name), p in raw.items():
        row = indexed.loc[key]
        assert row[f"{name}_p"] == pytest.approx(p, rel=1e-9), (key, name)
        assert row[f"{name}_p_adjusted"] == pytest.approx(adjusted[(key, name)], rel=1e-9)
        expected = (
            ("better" if row[f"{name}_diff"] > 0 else "worse")
            if adjusted[(key, name)] < 0.05
            else ""
        )
        assert row[f"{name}_direction"] == expected, (key, name)
    assert frame.attrs["tests"] == len(raw)
    assert request["cf_steer_direction"] == "better"  # +0.33 on average, every user up
    markdown = render_steer(frame, 10, spec, template="both", wording=WORDING)
    assert "| IDIOMoE | history |" in markdown and "|  | + request |" in markdown
    assert f"{request['cf_steer']:.4f}↑" in markdown and "post-filtered" not in markdown
    oracle = render_steer(frame, 10, spec, template="both", kind="oracle")
    assert "post-filtered to C" in oracle and "upper bound" in oracle
    latex = render_steer(frame, 10, spec, Style("latex", label="tab:steer"), template="both")
    assert r"$^{\uparrow}$" in latex and r"\label{tab:steer}" in latex


def test_a_steered_row_worded_unlike_the_template_is_refused(tmp_path, runs):
    records, _ = runs
    other = _run(tmp_path / "x", "idiomoe_steer", "moe_expert", 0, {}, request="a {genres}")
    with pytest.raises(ValueError, match="worded 'a \\{genres\\}'.*template 'both'"):
        steer_table_frame(records[:4] + [other], "both", 10)
    with pytest.raises(ValueError, match="both rank idiomoe's users with requests"):
        intent = _run(tmp_path / "y", "idiomoe_learned_router", "moe_expert", 0, {}, WORDING)
        steer_table_frame(records + [intent], "both", 10)


def test_a_variant_with_its_own_steered_row_is_a_row_of_its_own(tmp_path, runs):
    """IDIOMoE trained with requests (a variant) and its steered row: a pair of its own beside
    idiomoe's zero-shot pair, each steered row read against its own parent."""
    records, (parent, steered, _) = runs
    trained = _columns(
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
        [0, 1, 1, 1, 1, 1, 1, 1],
        [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, NAN],
        [0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.3, NAN],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
        [1] * 8,
    )
    trained_steered = _columns(
        [0.2] * 8, [1] * 8, [0.9, 0.8, 0.9, 0.8, 0.9, 0.8, 0.9, NAN], [0.4] * 7 + [NAN]
    )
    extra = [
        _run(tmp_path, "idiomoe_requests", "moe_expert", 0, trained),
        _run(tmp_path, "idiomoe_requests_steer", "moe_expert", 0, trained_steered, WORDING, True),
    ]
    frame = steer_table_frame(records + extra, "both", 10, CompareSpec(test="t"))
    indexed = frame.set_index(["model", "condition"])
    keep = slice(0, 7)
    for model, base, child in (
        ("idiomoe", parent, steered),
        ("idiomoe_requests", trained, trained_steered),
    ):
        history, request = indexed.loc[(model, "history")], indexed.loc[(model, "request")]
        assert history["ndcg"] == pytest.approx(np.mean(base["ndcg_at_10"][keep]))
        assert request["steer"] == pytest.approx(np.mean(child["steer_both_at_10"][keep]))
        a = np.array(child["cf_steer_both_at_10"][keep])
        b = np.array(base["cf_steer_both_at_10"][keep])
        assert request["cf_steer_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
    assert ("idiomoe_popprior", "history") not in indexed.index
    # the zero-shot pair and the pair trained with requests say which they are
    assert not indexed.loc[("idiomoe", "request"), "trained_with_requests"]
    assert indexed.loc[("idiomoe_requests", "request"), "trained_with_requests"]
    markdown = render_steer(frame, 10, CompareSpec(), template="both")
    assert markdown.count("| + request (trained with requests) |") == 1
    assert markdown.count("| + request |") == 1
