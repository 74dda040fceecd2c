"""Generated result pages: `llm4rec results-page` turns a finished grid's reports into a dated page
under docs/results/, refreshes the index there and the results block of the README.

Measured numbers are never typed: the page copies the report's Markdown tables unedited (the numbers
the significance tests compared) and takes the commit, the machine and the timings from the runs'
own run.json. `docs/results/<grid>-<date>-<commit>.md` names what it holds.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from llm4rec.config import Grid
from llm4rec.io import read_json, write_text

README_BEGIN = "<!-- results:begin -->"
README_END = "<!-- results:end -->"
PAGE_NAME = re.compile(r"^(?P<grid>.+)-(?P<date>\d{4}-\d{2}-\d{2})-(?P<commit>[0-9a-f]{7,})\.md$")
FIGURE = "figures/{metric}_ci.png"  # the main report's metric-with-intervals figure
CURVES = "figures/learning_curves.png"  # validation score against training compute, every row


def run_records(grid: Grid, kind: str) -> list[tuple[tuple[str, str, int], dict]]:
    """(cell, run.json) of every finished run of a report kind."""
    records = []
    for cell in grid.runs(kind):
        path = grid.run_dir(*cell) / "run.json"
        if path.is_file():
            records.append((cell, read_json(path)))
    return records


def budget_sentence(records: Sequence[tuple[tuple, dict]]) -> str:
    """What the grid can and cannot conclude, from its runs' convergence verdicts (run.json)."""
    verdicts: dict[str, set[str]] = {}
    for (_, model, _), record in records:
        verdict = (record.get("convergence") or {}).get("verdict")
        if verdict:
            verdicts.setdefault(model, set()).add(verdict)
    trained = {m: v for m, v in verdicts.items() if v - {"untrained"}}
    improving = sorted(m for m, v in trained.items() if "still improving" in v)
    unknown = sorted(m for m, v in trained.items() if v <= {"unknown"})
    if not trained:
        return ""
    return (
        f"**What this grid can conclude.** {len(improving)} of its {len(trained)} trained rows "
        "were still improving at the end of their budget"
        + (f" ({', '.join(improving)})" if improving else "")
        + (
            f" and {len(unknown)} validated too rarely to tell ({', '.join(unknown)})"
            if unknown
            else ""
        )
        + ": for those, a ↓ against the best baseline compares this grid's budgets, not the "
        "paradigms. The tables say which rows beat which at these budgets on this protocol, and "
        "where no test could have told (the power sentence under each table); what a paradigm "
        "reaches with its paper's budget is the paper grid's question (benchmarks/paper.yaml)."
    )


def _commit(record: dict) -> str:
    return record.get("environment", {}).get("git_commit", "unknown")


def _commits(records: Sequence[tuple[tuple, dict]]) -> list[str]:
    """The runs' commits, oldest first (by the end of each commit's first run)."""
    first_end: dict[str, float] = {}
    for _, r in records:
        end = r["timing"]["rank_end"]
        first_end[_commit(r)] = min(end, first_end.get(_commit(r), end))
    return sorted(first_end, key=lambda c: (first_end[c], c))


def _machine(records: Sequence[tuple[tuple, dict]]) -> str:
    env = records[0][1].get("environment", {})
    gpu = env.get("cuda") or "no GPU"
    packages = env.get("packages", {})
    return (
        f"{env.get('cpu_model', 'unknown CPU')}, {env.get('cpu_count', '?')} CPUs "
        f"({env.get('cpu_capability', '?')}), {gpu}; torch {packages.get('torch', '?')}, "
        f"Python {env.get('python', '?')}"
    )


def _span_minutes(records: Sequence[tuple[tuple, dict]]) -> tuple[float, float]:
    """(minutes from the first run's start to the last run's end, sum of the runs' minutes)."""
    starts = [r["timing"]["train_start"] for _, r in records]
    ends = [r["timing"]["rank_end"] for _, r in records]
    total = sum(r["timing"]["rank_end"] - r["timing"]["train_start"] for _, r in records)
    return (max(ends) - min(starts)) / 60, total / 60


def timing_rows(records: Sequence[tuple[tuple, dict]]) -> list[str]:
    """One Markdown row per run: train and rank seconds from its run.json."""
    rows = ["| Model | Seed | Train (s) | Rank (s) |", "|---|---|---|---|"]
    for (_, model, seed), record in records:
        t = record["timing"]
        rows.append(
            f"| {model} | {seed} | {t['train_end'] - t['train_start']:.1f} "
            f"| {t['rank_end'] - t['rank_start']:.1f} |"
        )
    return rows


def rl_curve_rows(records: Sequence[tuple[tuple, dict]]) -> list[str]:
    """Per RL run (`fit.grpo_log` in its run.json), one Markdown table of its curves at each
    validation step: the step's reward, KL (or, for beam groups, the k3 penalty at their items),
    zero-advantage share and entropy averaged over the steps
    since the previous validation, and validation NDCG@10 (step 0: the SFT parent)."""
    lines = []
    for (_, model, seed), record in records:
        fit = record.get("fit", {})
        log = fit.get("grpo_log")
        if not log:
            continue
        metric = fit.get("selection_metric", "ndcg_at_10")
        # sampled groups estimate the KL; beam groups give the penalty's value at their items
        kl = "kl" if "kl" in log[0] else "k3_at_beam_items"
        kl_title = "KL" if kl == "kl" else "k3 at beam items"
        lines += [
            f"**{model}**, seed {seed} (from {fit['policy']['source']}; selected step "
            f"{fit['best_step']}):",
            "",
            f"| Step | Reward | {kl_title} | Zero-advantage share | Entropy | Valid {metric} |",
            "|---|---|---|---|---|---|",
            f"| 0 | | | | | {fit[f'valid_{metric}_at_start']:.4f} |",
        ]
        since = []
        for entry in log:
            since.append(entry)
            if "valid" not in entry:
                continue

            def mean(key: str, rows=since) -> float:
                return sum(r[key] for r in rows) / len(rows)

            lines.append(
                f"| {entry['step']} | {mean('reward'):.4f} | {mean(kl):.4f} "
                f"| {mean('zero_advantage_share'):.3f} | {mean('entropy'):.3f} "
                f"| {entry['valid']:.4f} |"
            )
            since = []
        lines.append("")
    return lines


def page_stem(grid: Grid, records: Sequence[tuple[tuple, dict]]) -> tuple[str, str, str]:
    """(file stem `<grid>-<date>-<commit>`, date, short commit); the date is the last run's end
    (UTC), the commit that of the last run to finish (a grid extended by a later commit gets a new
    page; its older runs keep theirs)."""
    _, last_record = max(records, key=lambda cell_record: cell_record[1]["timing"]["rank_end"])
    last = last_record["timing"]["rank_end"]
    date = dt.datetime.fromtimestamp(last, dt.timezone.utc).date().isoformat()
    commit = _commit(last_record).removesuffix("-dirty")[:7]
    return f"{grid.name}-{date}-{commit}", date, commit


MARKUP = re.compile(r"\*\*|</?ins>|[↑↓‡°†]|\\\*")


def _table_rows(markdown: str) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
    """The header and the rows, keyed (paradigm, model), of the first Markdown table in `markdown`
    (a main table: marks and emphasis stripped; the italic best-baseline lines skipped)."""
    lines = []
    for line in markdown.strip().splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break  # the first table ends
    if len(lines) < 2:
        return [], {}
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    head, rows = cells[0], {}
    for row in cells[2:]:
        if not row[0] and not row[1].strip("*"):
            continue
        if row[1].startswith("*↳"):
            continue
        clean = [MARKUP.sub("", c).strip() for c in row]
        rows[(clean[0], clean[1])] = clean
    return head, rows


def _number(text: str) -> float | None:
    try:
        return float(text.rstrip("%"))
    except ValueError:
        return None


def table_changes(previous: str, current: str) -> list[str]:
    """What changed in the main table between two pages' Markdown: rows added and removed, and each
    common row's values that moved (old -> new), column by column."""
    old_head, old = _table_rows(previous)
    new_head, new = _table_rows(current)
    lines = []
    added = [k for k in new if k not in old]
    removed = [k for k in old if k not in new]
    if added:
        lines.append("Rows added: " + ", ".join(f"{m} ({p})" for p, m in added) + ".")
    if removed:
        lines.append("Rows removed: " + ", ".join(f"{m} ({p})" for p, m in removed) + ".")
    for key in (k for k in new if k in old):
        moved = []
        for column, value in zip(new_head[2:], new[key][2:], strict=False):
            if column not in old_head:
                continue
            before = old[key][old_head.index(column)]
            if before != value and (before, value) != ("", ""):
                moved.append(f"{column} {before or '–'} → {value or '–'}")
        if moved:
            lines.append(f"{key[1]} ({key[0]}): " + "; ".join(moved) + ".")
    return lines


def _commit_depth(commit: str) -> int:
    """How many commits lead to `commit` (git rev-list --count): orders pages of one date; -1 where
    git does not know it."""
    try:
        done = subprocess.run(
            ["git", "rev-list", "--count", commit], capture_output=True, text=True, check=True
        )
        return int(done.stdout.strip())
    except (OSError, subprocess.CalledProcessError, ValueError):
        return -1


def previous_page(results_dir: Path, grid: Grid, stem: str) -> Path | None:
    """The newest page of the same grid in `results_dir` other than `stem`: the latest date, then
    the commit with the longest history (file times say nothing after a clone)."""
    pages = [
        p
        for p in results_dir.glob("*.md")
        if (m := PAGE_NAME.match(p.name)) and m["grid"] == grid.name and p.stem != stem
    ]
    if not pages:
        return None
    return max(pages, key=page_order)


def page_order(page: Path) -> tuple[str, int, str]:
    """A results page's place among the others: its date, then its commit's history length, then
    its name (file times say nothing after a clone)."""
    found = PAGE_NAME.match(page.name)
    return found["date"], _commit_depth(found["commit"]), page.name


def _read(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run the report stage first: make bench)")
    return path.read_text().strip()


def render_page(
    grid: Grid, wall_seconds: float | None = None, results_dir: Path | None = None
) -> tuple[str, str, str]:
    """(file stem, page, README block) for the grid's finished reports; with `results_dir`, what
    changed in the main table since the grid's previous page there."""
    main = run_records(grid, "main")
    if not main:
        raise FileNotFoundError(
            f"{grid.grid_dir}/runs: no finished run of grid '{grid.name}' (run make bench first)"
        )
    ablations = [
        rec for rec in run_records(grid, "ablations") if rec[0] not in {c for c, _ in main}
    ]
    reports, ablation_reports = grid.report_dir("main"), grid.report_dir("ablations")
    has_ablations = (ablation_reports / "ablations.md").is_file() and bool(ablations)
    stem, date, commit = page_stem(grid, main + ablations)
    commits = _commits(main + ablations)
    span, run_minutes = _span_minutes(main)
    facts = [
        ("Grid", f"`{grid.path}` (`{grid.name}`)"),
        ("Commit", ", ".join(f"`{c}`" for c in commits) + " (from every run's run.json)"),
        ("Date", f"{date} (UTC, the last run's end)"),
        ("Machine", _machine(main)),
        (
            "Main job",
            f"{len(main)} runs; {span:.1f} min from the first run's start to the last run's end "
            f"({run_minutes:.1f} run-minutes)",
        ),
    ]
    if wall_seconds is not None:
        facts.append(
            (
                "Wall clock",
                f"{wall_seconds / 60:.1f} min for the whole main job, as timed around it "
                "(`make bench` from a fresh clone, environment included)",
            )
        )
    if has_ablations:
        span_a, run_a = _span_minutes(ablations)
        facts.append(
            (
                "Ablation target",
                f"{len(ablations)} runs; {span_a:.1f} min ({run_a:.1f} run-minutes)",
            )
        )
    metric = grid.report_options()["slice_metric"]
    figure = reports / FIGURE.format(metric=metric)
    lines = [
        f"# {grid.name}: results of {date}, commit {commit}",
        "",
        "Generated by `llm4rec results-page` from the grid's reports and run folders; do not edit "
        "(rerun the command). Tables are the report's Markdown, unedited.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in facts),
        "",
    ]
    if (reports / "anchors.md").is_file():  # the anchor grid (llm4rec anchors)
        lines += ["## Published anchors", "", _read(reports / "anchors.md"), ""]
    lines += [
        "## Main table",
        "",
        _read(reports / "results_table.md"),
        "",
    ]
    before = previous_page(results_dir, grid, stem) if results_dir is not None else None
    if before is not None:
        old = before.read_text()
        old_table = old.split("## Main table", 1)[-1] if "## Main table" in old else ""
        changes = table_changes(old_table, _read(reports / "results_table.md"))
        lines += [
            f"### Changes from [{before.stem}]({before.name})",
            "",
            *([f"- {c}" for c in changes] or ["No value in the main table changed."]),
            "",
        ]
    if figure.is_file():
        lines += [f"![{metric} with intervals]({stem}-{metric}.png)", ""]
    budget = budget_sentence(main + ablations)
    if budget:
        lines += [budget, ""]
    if (reports / CURVES).is_file():
        lines += [
            "### Learning curves (validation score against training compute)",
            "",
            f"![learning curves]({stem}-learning-curves.png)",
            "",
        ]
    if has_ablations:
        lines += ["## Ablations", "", _read(ablation_reports / "ablations.md"), ""]
        versus = ablation_reports / "results_table.md"
        if versus.is_file():
            lines += [
                "### The ablation target's rows against the best baseline "
                "(parents at all their seeds)",
                "",
                _read(versus),
                "",
            ]
        curves = rl_curve_rows(ablations)
        if curves:
            lines += [
                "### RL curves (run.json, means over the steps between validations)",
                "",
                *curves,
            ]
    lines += ["## Costs", "", _read(reports / "cost_table.md"), ""]
    if has_ablations:
        lines += ["### Ablation target", "", _read(ablation_reports / "cost_table.md"), ""]
    if has_ablations and (ablation_reports / "beam_vs_exact.md").is_file():
        lines += ["## Beam against exact", "", _read(ablation_reports / "beam_vs_exact.md"), ""]
    for folder, title in ((reports, "main job"), (ablation_reports, "ablation target")):
        diagnostics = folder / "diagnostics.md"
        if (folder != ablation_reports or has_ablations) and diagnostics.is_file():
            text = _read(diagnostics)
            if text.startswith("|"):  # a table, not "No row was scored on fewer ..."
                lines += [f"## Diagnostics ({title}): rows under the minimum sample", "", text, ""]
    steer_dir = ablation_reports if has_ablations else reports
    if (steer_dir / "steer.md").is_file():
        lines += ["## Steerability", "", "### Counterfactual requests (the headline)", ""]
        lines += [_read(steer_dir / "steer.md"), ""]
    if (steer_dir / "steer_oracle.md").is_file():
        lines += ["### Oracle requests (an upper bound)", "", _read(steer_dir / "steer_oracle.md")]
        lines += [""]
    lines += ["## Slices", "", _read(reports / "slices.md"), ""]
    if has_ablations and (ablation_reports / "slices.md").is_file():
        # the variants by slice (e.g. a cold-start row on new items), each bucket against the best
        # baseline of the ablation report
        lines += ["## Slices of the ablation target", "", _read(ablation_reports / "slices.md"), ""]
    lines += ["## Per-run timings (run.json)", "", *timing_rows(main + ablations), ""]
    job = (
        f"{wall_seconds / 60:.1f} min from a fresh clone"
        if wall_seconds is not None
        else f"{span:.1f} min of runs"
    )
    block = "\n".join(
        [
            f"From [{stem}](docs/results/{stem}.md) ({date}, commit `{commit}`, "
            f"{_machine(main)}; main job {job}):",
            "",
            _read(reports / "results_table.md"),
            *(["", budget] if budget else []),
        ]
    )
    return stem, "\n".join(lines), block


def write_index(results_dir: Path) -> Path:
    """docs/results/README.md: every generated page, newest first."""
    pages = sorted(
        (p for p in results_dir.glob("*.md") if PAGE_NAME.match(p.name)),
        key=page_order,
        reverse=True,
    )
    lines = [
        "# Result pages",
        "",
        "Generated by `llm4rec results-page` (newest first); each page names its grid, date and "
        "commit. Do not edit: rerun the command on a finished grid.",
        "",
        *(f"- [{p.name.removesuffix('.md')}]({p.name})" for p in pages),
        "",
    ]
    return write_text(results_dir / "README.md", "\n".join(lines))


def replace_block(readme: str, block: str, path: Path) -> str:
    if readme.count(README_BEGIN) != 1 or readme.count(README_END) != 1:
        raise ValueError(f"{path}: needs one '{README_BEGIN}' line and one '{README_END}' line")
    head, rest = readme.split(README_BEGIN)
    _, tail = rest.split(README_END)
    return f"{head}{README_BEGIN}\n{block}\n{README_END}{tail}"


def write_results_page(
    grid: Grid, results_dir: Path, readme: Path | None, wall_seconds: float | None = None
) -> list[Path]:
    """Write the page (and its figure), the index and the README block; return the written paths."""
    stem, page, block = render_page(grid, wall_seconds, results_dir)
    written = [write_text(results_dir / f"{stem}.md", page + "\n")]
    metric = grid.report_options()["slice_metric"]
    figure = grid.report_dir("main") / FIGURE.format(metric=metric)
    if figure.is_file():
        target = results_dir / f"{stem}-{metric}.png"
        shutil.copyfile(figure, target)
        written.append(target)
    curves = grid.report_dir("main") / CURVES
    if curves.is_file():
        target = results_dir / f"{stem}-learning-curves.png"
        shutil.copyfile(curves, target)
        written.append(target)
    written.append(write_index(results_dir))
    if readme is not None:
        written.append(write_text(readme, replace_block(readme.read_text(), block, readme)))
    return written
