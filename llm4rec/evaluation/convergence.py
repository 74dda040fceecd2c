"""Did a run's budget, not its method, decide its number? A verdict from its own validation curve.

A run is **still improving at the end of its budget** when both hold:
- its best validation score (the first of equal bests, as checkpoint selection keeps) is among
  the last tenth of its evaluations (at least the last one), and
- the least-squares slope of that last tenth plus the evaluation before it (at least the last two
  points) is positive.

A flat curve (slope 0) or one that peaked earlier is `converged` (for this budget: it stopped
gaining); a curve of fewer than two evaluations is `unknown` (nothing to read a trend from), and a
run that trained nothing is `untrained`. The curve is the one checkpoint selection read: fit's
`valid_curve` in run.json (RecBole's per-epoch validation through our evaluator, the LLM rows'
validation steps, AlphaRec's and RTA's epochs, GRPO's steps), at the run's selection metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

VERDICTS = ("still improving", "converged", "unknown", "untrained")
# the last tenth of the evaluations: a run that early-stopped after `patience` evaluations without
# a better score has its best further back, so it reads as converged
TAIL_SHARE = 0.1


def convergence_verdict(values: Sequence[float], tail_share: float = TAIL_SHARE) -> str:
    """`still improving`, `converged` or `unknown` for a validation curve (module doc)."""
    scores = np.asarray([float(v) for v in values], dtype=np.float64)
    if len(scores) < 2 or not np.all(np.isfinite(scores)):
        return "unknown"
    tail = max(1, math.ceil(tail_share * len(scores)))
    best = int(np.argmax(scores))
    segment = scores[-(tail + 1) :]
    slope = np.polyfit(np.arange(len(segment), dtype=np.float64), segment, 1)[0]
    return "still improving" if best >= len(scores) - tail and slope > 0 else "converged"


def validation_curve(fit: Mapping[str, Any], metric: str) -> list[float]:
    """The selection metric at each validation of a run's training (fit's `valid_curve`), in
    order."""
    return [float(p[metric]) for p in fit.get("valid_curve") or [] if metric in p]


def run_convergence(fit: Mapping[str, Any], metric: str, trainable: int | None = None) -> dict:
    """What run.json records: the verdict, how many evaluations it read, and the last and best
    scores. A run with no trainable parameter, or one that trained no step, is `untrained`."""
    curve = validation_curve(fit, metric)
    untrained = trainable == 0 or fit.get("epochs") == 0 or fit.get("sft_steps_run") == 0
    verdict = "untrained" if untrained and len(curve) < 2 else convergence_verdict(curve)
    return {
        "verdict": verdict,
        "evaluations": len(curve),
        "metric": metric,
        "best": max(curve) if curve else None,
        "last": curve[-1] if curve else None,
    }
