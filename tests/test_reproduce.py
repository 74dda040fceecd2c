"""`llm4rec reproduce`'s verdicts: bit-identical, within float noise, different, on hand-built
rankings; and the float-noise tolerance measured where it comes from: the same weights re-ranked on
other instruction sets and thread counts (emulated on this CPU) move scores by far less than
SCORE_RTOL."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llm4rec.reproduce import (
    SCORE_RTOL,
    PhaseEvidence,
    metric_verdict,
    ranking_verdicts,
    user_ranking_verdict,
)


def ranking(items, scores, user="u1"):
    return pd.DataFrame(
        {"user_id": user, "rank": range(1, len(items) + 1), "item_id": items, "score": scores}
    )


def test_identical_lists_are_bit_identical():
    a = ranking(["x", "y", "z"], [-1.0, -2.0, -3.0])
    assert user_ranking_verdict(a, a.copy()) == "bit-identical"


def test_a_swap_of_two_scores_that_tie_within_float_noise_is_noise():
    tiny = 2.0**-20  # 2^-20 relative at |score| 2: 8 ulps of fp32, well inside 256
    a = ranking(["x", "y", "z"], [-1.0, -2.0, -2.0 - tiny])
    b = ranking(["x", "z", "y"], [-1.0, -2.0, -2.0 - tiny])
    assert user_ranking_verdict(a, b) == "within float noise"
    assert (
        user_ranking_verdict(a, ranking(["x", "y", "z"], [-1.0, -2.0 - tiny, -2.0 - 2 * tiny]))
        == "within float noise"
    )


def test_a_swap_of_two_distinct_scores_is_different():
    a = ranking(["x", "y", "z"], [-1.0, -2.0, -3.0])
    assert user_ranking_verdict(a, ranking(["x", "z", "y"], [-1.0, -2.0, -3.0])) == "different"
    assert user_ranking_verdict(a, ranking(["x", "y", "z"], [-1.0, -2.0, -3.01])) == "different"
    assert user_ranking_verdict(a, ranking(["x", "y"], [-1.0, -2.0])) == "different"


def test_an_item_that_falls_off_at_a_tie_at_depth_k_is_noise_and_otherwise_different():
    tie = -3.0 * (1 + 2.0**-22)
    a = ranking(["x", "y", "z"], [-1.0, -2.0, -3.0])
    assert (
        user_ranking_verdict(a, ranking(["x", "y", "w"], [-1.0, -2.0, tie])) == "within float noise"
    )
    assert (
        user_ranking_verdict(a, ranking(["x", "y", "w"], [-1.0, -2.0, -3.0]))
        == "within float noise"
    )
    # z was far from w
    assert user_ranking_verdict(a, ranking(["x", "w", "y"], [-1.0, -2.0, -2.0])) == "different"


def test_metric_verdicts_follow_the_users_behind_the_difference():
    old = pd.concat(
        [
            ranking(["x", "y"], [-1.0, -1.0 - 1e-7], "u1"),
            ranking(["x", "y"], [-1.0, -2.0], "u2"),
            ranking(["x", "y"], [-1.0, -2.0], "u3"),
        ]
    )
    noisy = pd.concat([ranking(["y", "x"], [-1.0, -1.0 - 1e-7], "u1"), old[old.user_id != "u1"]])
    moved = pd.concat([old[old.user_id != "u3"], ranking(["y", "x"], [-1.0, -2.0], "u3")])
    assert ranking_verdicts(old, noisy) == {
        "u1": "within float noise",
        "u2": "bit-identical",
        "u3": "bit-identical",
    }
    per_user = pd.DataFrame(
        {"ndcg_at_10": [1.0, 1.0, 1.0], "hr_at_10": [1.0, 1.0, 1.0]}, index=["u1", "u2", "u3"]
    )
    changed = per_user.assign(ndcg_at_10=[0.63, 1.0, 1.0])
    noise = {"test": PhaseEvidence(ranking_verdicts(old, noisy), per_user, changed)}
    assert metric_verdict("test_ndcg_at_10", 0.12, noise)[0] == "within float noise"
    assert metric_verdict("test_hr_at_10", 0.0, noise) == ("bit-identical", None)
    # an aggregate
    assert metric_verdict("test_coverage_at_10", 0.5, noise) == (
        "within float noise",
        None,
    )
    different = {
        "test": PhaseEvidence(
            ranking_verdicts(old, moved), per_user, per_user.assign(ndcg_at_10=[1.0, 1.0, 0.63])
        )
    }
    assert metric_verdict("test_ndcg_at_10", 0.12, different)[0] == "different"
    assert metric_verdict("test_coverage_at_10", 0.5, different)[0] == "different"
    # a recorded mean that no user's value explains (an edited record): different
    assert metric_verdict("test_hr_at_10", 0.001, noise)[0] == "different"
    assert metric_verdict("test_ndcg_at_10", 0.12, {})[0] == "different"  # no files to judge by


def test_the_paired_p_value_is_scipys():
    from scipy import stats

    rng = np.random.default_rng(0)
    old_values, new_values = rng.random(50), rng.random(50)
    users = [f"u{i}" for i in range(50)]
    old = pd.concat([ranking(["x"], [0.0], u) for u in users])
    new = pd.concat([ranking(["y"], [-1.0], u) for u in users])
    evidence = {
        "test": PhaseEvidence(
            ranking_verdicts(old, new),
            pd.DataFrame({"ndcg_at_10": old_values}, index=users),
            pd.DataFrame({"ndcg_at_10": new_values}, index=users),
        )
    }
    verdict, p = metric_verdict("test_ndcg_at_10", 0.1, evidence)
    assert verdict == "different" and p == pytest.approx(
        stats.ttest_rel(new_values, old_values).pvalue, rel=1e-12
    )


# The same random-weight Llama ranks its vocabulary for 64 prompts on another ISA / thread count.
SCORE_SCRIPT = """
import json, sys, torch
from tests.helpers import tiny_backbone
torch.set_num_threads(int(sys.argv[1]))
words = [f"w{i}" for i in range(500)]
model, tokenizer = tiny_backbone(words, seed=0, hidden=256, layers=4, init_std=0.05)
g = torch.Generator().manual_seed(1)
ids = torch.randint(4, len(words) + 4, (64, 24), generator=g)
with torch.no_grad():
    scores = torch.log_softmax(model(ids).logits[:, -1].float(), -1)
top = torch.topk(scores, 50, dim=-1)
capability = torch.backends.cpu.get_cpu_capability()
print(json.dumps({"capability": capability, "scores": top.values.tolist(),
                  "items": top.indices.tolist()}))
"""
# what another machine of the kind may run: ATen's vector width, MKL's and oneDNN's instruction sets
MACHINES = {
    "this CPU": {},
    "AVX2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    },
    "no vector ISA": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
    },
}


def scores_under(variables: dict, threads: int) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
    } | variables
    proc = subprocess.run(
        [sys.executable, "-c", SCORE_SCRIPT, str(threads)],
        cwd=Path(__file__).resolve().parents[1],  # the repository root: `tests` is importable
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def as_frame(result: dict) -> pd.DataFrame:
    rows = [
        (f"u{u}", r + 1, str(i), s)
        for u, (items, scores) in enumerate(zip(result["items"], result["scores"], strict=True))
        for r, (i, s) in enumerate(zip(items, scores, strict=True))
    ]
    return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"])


def test_the_same_weights_on_other_instruction_sets_and_thread_counts_agree_within_float_noise():
    # the reference is this CPU on 2 threads; every other setting against it, two processes at a
    # time (each is one model's forward, mostly start-up)
    settings = [
        (name, variables, threads)
        for name, variables in MACHINES.items()
        for threads in (1, 2)
        if (variables, threads) != ({}, 2)
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda s: scores_under(s[1], s[2]), [("ref", {}, 2), *settings]))
    reference = results[0]
    for (name, _, threads), other in zip(settings, results[1:], strict=True):
        relative = np.abs(np.array(other["scores"]) - reference["scores"]) / np.abs(
            reference["scores"]
        )
        # measured on an AVX-512 EPYC: at most ~1e-6 relative (a few ulps), 16x below tolerance
        assert relative.max() < SCORE_RTOL / 8, (name, threads, float(relative.max()))
        verdicts = set(ranking_verdicts(as_frame(reference), as_frame(other)).values())
        assert verdicts <= {"bit-identical", "within float noise"}, (name, threads)
