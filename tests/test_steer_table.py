"""The steer table (llm4rec.report.steer) on constructed runs: every number by hand, the steered
row tested against its parent on the users and seeds both have (p-values as scipy's `ttest_rel`,
Holm by hand), the post-filter reference, and a steered row worded unlike the table's template
refused."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from llm4rec.io import write_json, write_parquet
from llm4rec.report.compare import CompareSpec
from llm4rec.report.runs import RunRecord
from llm4rec.report.steer import render_steer, steer_table_frame

WORDING = "something from the {decade}: {genres}"
USERS = [f"u{i}" for i in range(8)]


def _run(root, model, paradigm, seed, columns, request=None, trained=False) -> RunRecord:
    folder = root / model / f"seed{seed}"
    write_parquet(folder / "per_user_test.parquet", pd.DataFrame({"user_id": USERS} | columns))
    write_json(folder / "run.json", {"fit": {"trained_with_requests": trained}})
    evaluation = {"requests": {"template": request}} if request else {}
    write_json(
        folder / "metrics.json",
        {"evaluation": evaluation, "steer": {"templates": {"both": WORDING}, "cutoffs": [10]}},
    )
    return RunRecord("d", model, paradigm, seed, folder)


def _columns(ndcg, hr, steer, f_ndcg=None, f_hr=None):
    out = {"ndcg_at_10": ndcg, "hr_at_10": hr, "steer_both_at_10": steer}
    if f_ndcg is not None:
        out |= {"filtered_both_ndcg_at_10": f_ndcg, "filtered_both_hr_at_10": f_hr}
    return out


@pytest.fixture
def runs(tmp_path):
    nan = np.nan
    # idiomoe at seeds 0 and 1; its steered row at seed 0 only: the pair is read on seed 0
    parent0 = _columns(
        [0.1, 0.2, 0.0, 0.5, 0.3, 0.0, 0.1, 0.9],
        [1, 1, 0, 1, 1, 0, 1, 1],
        [0.2, 0.1, 0.3, 0.0, 0.4, 0.2, 0.1, nan],  # u7: no request could be written
        [0.2, 0.3, 0.0, 0.6, 0.4, 0.1, 0.1, 0.9],
        [1, 1, 0, 1, 1, 1, 1, 1],
    )
    parent1 = {k: [9.0] * 8 for k in parent0}  # a seed the steered row lacks: never read
    steered = _columns(
        [0.3, 0.2, 0.1, 0.6, 0.3, 0.2, 0.2, 0.0],
        [1, 1, 1, 1, 1, 1, 1, 0],
        [0.6, 0.5, 0.7, 0.3, 0.8, 0.5, 0.6, nan],
    )
    baseline = _columns([0.5] * 8, [1] * 8, [0.5] * 7 + [nan], [0.75] * 8, [1] * 8)
    return [
        _run(tmp_path, "sasrec", "baseline", 0, baseline),
        _run(tmp_path, "idiomoe", "moe_expert", 0, parent0),
        _run(tmp_path, "idiomoe", "moe_expert", 1, parent1),
        _run(tmp_path, "idiomoe_steer", "moe_expert", 0, steered, request=WORDING),
        _run(tmp_path, "idiomoe_popprior", "moe_expert", 0, parent0),  # a variant: not a row
    ], (parent0, steered)


def test_the_steer_table_by_hand(runs):
    records, (parent, steered) = runs
    spec = CompareSpec(test="t", correction="holm", alpha=0.05)
    frame = steer_table_frame(records, "both", 10, spec).set_index(["model", "condition"])
    assert set(frame.index) == {
        ("sasrec", "history"),
        ("sasrec", "post-filter"),
        ("idiomoe", "history"),
        ("idiomoe", "request"),
        ("idiomoe", "post-filter"),
    }  # the steered row is printed under its parent; another variant not at all
    keep = slice(0, 7)  # u0..u6: the users a request could be written for
    history, request = frame.loc[("idiomoe", "history")], frame.loc[("idiomoe", "request")]
    assert history["n_users"] == request["n_users"] == 7 and history["seeds"] == "0"
    assert history["ndcg_at_10"] == pytest.approx(np.mean(parent["ndcg_at_10"][keep]))
    assert request["ndcg_at_10"] == pytest.approx(np.mean(steered["ndcg_at_10"][keep]))
    assert request["steer_at_10"] == pytest.approx(np.mean(steered["steer_both_at_10"][keep]))
    post = frame.loc[("idiomoe", "post-filter")]
    assert post["ndcg_at_10"] == pytest.approx(np.mean(parent["filtered_both_ndcg_at_10"][keep]))
    assert post["steer_at_10"] == 1.0
    # each metric of the request row against the history row, on the same 7 users
    raw = {}
    for metric, column in (
        ("ndcg_at_10", "ndcg_at_10"),
        ("hr_at_10", "hr_at_10"),
        ("steer_at_10", "steer_both_at_10"),
    ):
        a, b = np.array(steered[column][keep]), np.array(parent[column][keep])
        raw[metric] = stats.ttest_rel(a, b).pvalue
        assert request[f"{metric}_p"] == pytest.approx(raw[metric], rel=1e-9)
        assert request[f"{metric}_diff"] == pytest.approx((a - b).mean())
    # Holm over the three tests, by hand
    order = sorted(raw, key=raw.get)
    adjusted, running = {}, 0.0
    for i, metric in enumerate(order):
        running = max(running, min(1.0, (3 - i) * raw[metric]))
        adjusted[metric] = running
    for metric, value in adjusted.items():
        assert request[f"{metric}_p_adjusted"] == pytest.approx(value, rel=1e-9)
        assert request[f"{metric}_direction"] == ("better" if value < 0.05 else "")
    assert request["steer_at_10_direction"] == "better"  # +0.4 on every user
    baseline = frame.loc[("sasrec", "history")]
    assert baseline["n_users"] == 7 and baseline["steer_at_10"] == 0.5
    assert frame.loc[("sasrec", "post-filter"), "ndcg_at_10"] == 0.75
    markdown = render_steer(frame.reset_index(), 10, spec, template="both", wording=WORDING)
    assert "| IDIOMoE | history |" in markdown and "|  | + request |" in markdown
    assert f"{request['steer_at_10']:.4f}↑" in markdown
    latex = render_steer(frame.reset_index(), 10, spec, "latex", template="both")
    assert r"$^{\uparrow}$" in latex and r"\label{tab:steer}" in latex


def test_a_steered_row_worded_unlike_the_template_is_refused(tmp_path, runs):
    records, _ = runs
    other = _run(tmp_path / "x", "idiomoe_steer", "moe_expert", 0, {}, request="a {genres}")
    with pytest.raises(ValueError, match="worded 'a \\{genres\\}'.*template 'both'"):
        steer_table_frame(records[:3] + [other], "both", 10)
    with pytest.raises(ValueError, match="both rank idiomoe's users with requests"):
        intent = _run(tmp_path / "y", "idiomoe_learned_router", "moe_expert", 0, {}, WORDING)
        steer_table_frame(records + [intent], "both", 10)


def test_a_variant_with_its_own_steered_row_is_a_row_of_its_own(tmp_path, runs):
    """IDIOMoE trained with requests (a variant) and its steered row: a pair of its own beside
    idiomoe's zero-shot pair, each steered row read against its own parent."""
    records, (parent, steered) = runs
    trained = _columns(
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
        [0, 1, 1, 1, 1, 1, 1, 1],
        [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, np.nan],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
        [1] * 8,
    )
    trained_steered = _columns([0.2] * 8, [1] * 8, [0.9, 0.8, 0.9, 0.8, 0.9, 0.8, 0.9, np.nan])
    extra = [
        _run(tmp_path, "idiomoe_requests", "moe_expert", 0, trained),
        _run(tmp_path, "idiomoe_requests_steer", "moe_expert", 0, trained_steered, WORDING, True),
    ]
    frame = steer_table_frame(records + extra, "both", 10).set_index(["model", "condition"])
    keep = slice(0, 7)
    for model, base, child in (
        ("idiomoe", parent, steered),
        ("idiomoe_requests", trained, trained_steered),
    ):
        history, request = frame.loc[(model, "history")], frame.loc[(model, "request")]
        assert history["ndcg_at_10"] == pytest.approx(np.mean(base["ndcg_at_10"][keep]))
        assert request["steer_at_10"] == pytest.approx(np.mean(child["steer_both_at_10"][keep]))
        a, b = np.array(child["steer_both_at_10"][keep]), np.array(base["steer_both_at_10"][keep])
        assert request["steer_at_10_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
    assert ("idiomoe_popprior", "history") not in frame.index
    # the zero-shot pair and the pair trained with requests say which they are
    assert not frame.loc[("idiomoe", "request"), "trained_with_requests"]
    assert frame.loc[("idiomoe_requests", "request"), "trained_with_requests"]
    markdown = render_steer(frame.reset_index(), 10, CompareSpec(), template="both")
    assert markdown.count("| + request (trained with requests) |") == 1
    assert markdown.count("| + request |") == 1
