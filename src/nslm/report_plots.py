"""`nslm-report`'s plots (PNG, matplotlib's Agg backend: no display needed on a cluster node).

- val_ppl_vs_k.png: exact val ppl against the number of negatives, one line per objective+sampler, exact
  softmax as a dashed line (one panel per corpus and V);
- val_ppl_vs_time.png: each run's validation curve against wall-clock minutes;
- tokens_per_sec_vs_vocab.png: throughput against V, from `nslm-bench` reports (k = 1024 rows) and runs;
- ppl_by_frequency.png: test ppl per target-word frequency bucket (most frequent words first), one line
  per run: where objectives differ (rare words, Jozefowicz et al. 2016).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from nslm.run_record import bucket_order, run_label
from nslm.utils.atomic import atomic_path

if TYPE_CHECKING:
    from nslm.report import Run

BENCH_K = 1024  # the k of the bench rows that go into the tokens/s plot


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
    return path


def _panels(count: int):
    figure, axes = plt.subplots(1, count, figsize=(5.5 * count, 4.2), squeeze=False)
    return figure, axes[0]


def val_ppl_vs_k(runs: list[Run], path: Path) -> Path | None:
    finished = [run for run in runs if run.val_ppl is not None]
    groups = sorted({(run.corpus, run.vocab_size) for run in finished if isinstance(run.k, int)})
    if not groups:
        return None
    figure, axes = _panels(len(groups))
    for axis, (corpus, vocab_size) in zip(axes, groups, strict=True):
        here = [run for run in finished if (run.corpus, run.vocab_size) == (corpus, vocab_size)]
        lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for run in here:
            if isinstance(run.k, int):
                lines[run.method].append((run.k, run.val_ppl))
        for method, points in sorted(lines.items()):
            points.sort()
            axis.plot([k for k, _ in points], [ppl for _, ppl in points], marker="o", label=method)
        for run in here:
            if run.loss == "full":
                axis.axhline(run.val_ppl, color="black", linestyle="--", linewidth=1, label="full softmax")
                break
        axis.set(xscale="log", xlabel="negatives per step (k)", ylabel="exact val ppl",
                 title=f"{corpus}, V = {vocab_size:,}")  # fmt: skip
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _save(figure, path)


def val_ppl_vs_time(runs: list[Run], path: Path) -> Path | None:
    curves = [run for run in runs if run.history]
    if not curves:
        return None
    groups = sorted({(run.corpus, run.vocab_size) for run in curves})
    figure, axes = _panels(len(groups))
    for axis, group in zip(axes, groups, strict=True):
        here = [run for run in curves if (run.corpus, run.vocab_size) == group]
        for run, label in zip(here, legend_labels(here), strict=True):
            minutes = [record["seconds"] / 60 for record in run.history]
            axis.plot(minutes, [record["val/ppl"] for record in run.history], marker=".", label=label)
        axis.set(yscale="log", xlabel="wall-clock (minutes)", ylabel="exact val ppl",
                 title=f"{group[0]}, V = {group[1]:,}")  # fmt: skip
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)
    return _save(figure, path)


def _bench_lines(benches: list[dict]) -> dict[str, list[tuple[int, float]]]:
    lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for bench in benches:
        for row in bench["rows"]:
            if row["k"] not in (None, BENCH_K):
                continue
            name = run_label(row["objective"], row["sampler"])
            lines[name].append((row["vocab_size"], row["tokens_per_sec"]))
    return lines


def tokens_per_sec_vs_vocab(runs: list[Run], benches: list[dict], path: Path) -> Path | None:
    lines = _bench_lines(benches)
    for run in runs:  # training runs: their measured tokens/s
        if run.tokens_per_sec and run.vocab_size:
            k = f" k={run.k}" if isinstance(run.k, int) else ""
            lines[f"run: {run.method}{k}"].append((run.vocab_size, run.tokens_per_sec))
    lines = {name: sorted(points) for name, points in lines.items() if len({v for v, _ in points}) > 1}
    if not lines:
        return None
    figure, (axis,) = _panels(1)
    figure.set_size_inches(8, 5)
    axis.set_prop_cycle(color=plt.cm.tab20.colors)  # ~17 lines: distinct colours
    for name, points in sorted(lines.items()):
        style = "--" if name in ("full", "bare PyTorch loop") else "-"
        axis.plot([v for v, _ in points], [t for _, t in points], style, marker="o", label=name)
    axis.set(xscale="log", yscale="log", xlabel="vocabulary size V", ylabel="training tokens/s",
             title=f"throughput against V (bench rows: k = {BENCH_K})")  # fmt: skip
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=7, ncol=2)
    return _save(figure, path)


def legend_labels(runs: list[Run]) -> list[str]:
    """One legend entry per run (its method and k), distinct: runs that would share an entry also get
    their directory (the table's `run`), and then their place in the list."""
    labels = [run.method + (f" k={run.k}" if isinstance(run.k, int) else "") for run in runs]
    for suffix in (lambda index: f" ({runs[index].run})", lambda index: f" #{index + 1}"):
        seen = Counter(labels)
        labels = [label + suffix(index) if seen[label] > 1 else label for index, label in enumerate(labels)]
    return labels


def ppl_by_frequency(runs: list[Run], path: Path) -> Path | None:
    with_buckets = [run for run in runs if run.buckets]
    if not with_buckets:
        return None
    groups = sorted({(run.corpus, run.vocab_size or 0) for run in with_buckets})
    figure, axes = _panels(len(groups))
    for axis, group in zip(axes, groups, strict=True):
        here = [run for run in with_buckets if (run.corpus, run.vocab_size or 0) == group]
        # one x position per bucket name of any run here, in bucket order: a run with fewer buckets
        # (or an older record's gaps) is drawn at its own names, never shifted onto another run's
        names = bucket_order(name for run in here for name in run.buckets)
        position = {name: index for index, name in enumerate(names)}
        for run, label in zip(here, legend_labels(here), strict=True):
            own = bucket_order(run.buckets)
            axis.plot([position[name] for name in own], [run.buckets[name] for name in own],
                      "--" if run.loss == "full" else "-", marker="o", label=label)  # fmt: skip
        axis.set_xticks(range(len(names)), [name.removeprefix("bucket_") for name in names])
        axis.set(yscale="log", xlabel="target-word frequency bucket (0: most frequent; equal token mass)",
                 ylabel="exact test ppl", title=f"{group[0]}, V = {group[1]:,}")  # fmt: skip
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)
    return _save(figure, path)


def write_plots(runs: list[Run], benches: list[dict], out: Path) -> dict[str, Path]:
    made = {
        "ppl_by_frequency": ppl_by_frequency(runs, out / "ppl_by_frequency.png"),
        "val_ppl_vs_k": val_ppl_vs_k(runs, out / "val_ppl_vs_k.png"),
        "val_ppl_vs_time": val_ppl_vs_time(runs, out / "val_ppl_vs_time.png"),
        "tokens_per_sec_vs_vocab": tokens_per_sec_vs_vocab(runs, benches, out / "tokens_per_sec_vs_vocab.png"),
    }
    return {name: path for name, path in made.items() if path is not None}
