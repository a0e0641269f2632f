"""Turn rows into the markdown table, the JSON record, the throughput plot and the target verdicts."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.measure import Row
from bench.suite import GATHER, LIMIT, METHODS, OPERATOR, SYNC

# The tutorial's own speedups of the unbounded gather over the sync loop at 100 items.
TUTORIAL_SPEEDUPS = {"add": 65.60 / 2.77, "search": 54.22 / 3.72, "delete": 29.21 / 0.61}
EXTRAPOLATED = "~"


@dataclass
class Target:
    name: str
    value: float | None
    threshold: float
    higher_is_better: bool = True

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.threshold if self.higher_is_better else self.value < self.threshold

    def line(self) -> str:
        verdict = {True: "MET", False: "MISSED", None: "n/a"}[self.met]
        value = "not measured" if self.value is None else f"{self.value:.2f}"
        sign = ">=" if self.higher_is_better else "<"
        return f"- [{verdict}] {self.name}: {value} (target {sign} {self.threshold:.2f})"


def _find(rows: list[Row], kind: str, n: int, method: str) -> Row | None:
    return next((r for r in rows if (r.workload, r.n, r.method) == (kind, n, method)), None)


def _ratio(numerator: Row | None, denominator: Row | None) -> float | None:
    if numerator is None or denominator is None or denominator.seconds <= 0:
        return None
    return numerator.seconds / denominator.seconds


def derived(rows: list[Row], row: Row) -> dict[str, float | None]:
    """Speedup over (a) and (b), and the fraction of the limit (limit time / this time)."""
    return {
        "vs_sync": _ratio(_find(rows, row.workload, row.n, SYNC), row),
        "vs_gather": _ratio(_find(rows, row.workload, row.n, GATHER), row),
        "of_limit": _ratio(_find(rows, row.workload, row.n, LIMIT), row),
    }


def _fmt(value: float | None, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def markdown_table(rows: list[Row]) -> str:
    header = ("| workload | N | method | wall s | items/s | × (a) sync | × (b) gather | % of limit "
              "| peak RSS MB | peak in-flight emb. req. | notes |")
    lines = [header, "|" + "---|" * 11]
    order = {"add": 0, "search": 1, "delete": 2, "ingest": 3}
    for row in sorted(rows, key=lambda r: (order[r.workload], r.n, METHODS.index(r.method))):
        d = derived(rows, row)
        mark = EXTRAPOLATED if row.extrapolated_from else ""
        spread = f"median of {row.reps}" if row.reps > 1 else ""
        notes = "; ".join(x for x in (spread, row.notes) if x)
        lines.append(
            f"| {row.workload} | {row.n:,} | {row.method} | {mark}{row.seconds:.3f} | {mark}{row.items_per_s:,.0f} "
            f"| {_fmt(d['vs_sync'], '{:.1f}x')} | {_fmt(d['vs_gather'], '{:.1f}x')} "
            f"| {_fmt(None if row.method == LIMIT else d['of_limit'], '{:.0%}')} "
            f"| {_fmt(row.peak_rss_mb, '{:.0f}')} | {_fmt(row.peak_in_flight, '{}')} | {notes} |"
        )
    return "\n".join(lines)


def targets(rows: list[Row], ingest_n: int = 10_000) -> list[Target]:
    out = []
    for kind, tutorial in TUTORIAL_SPEEDUPS.items():
        op = _find(rows, kind, 100, OPERATOR)
        out.append(Target(f"{kind} 100: (c) speedup over (a) sync loop >= tutorial's {tutorial:.1f}x",
                          _ratio(_find(rows, kind, 100, SYNC), op), tutorial))
    op = _find(rows, "ingest", ingest_n, OPERATOR)
    out += [
        Target(f"ingest {ingest_n:,}: (c) speedup over (a) sync loop (extrapolated)",
               _ratio(_find(rows, "ingest", ingest_n, SYNC), op), 50.0),
        Target(f"ingest {ingest_n:,}: (c) speedup over (b) unbounded gather",
               _ratio(_find(rows, "ingest", ingest_n, GATHER), op), 5.0),
        Target(f"ingest {ingest_n:,}: (c) fraction of the limit", _ratio(_find(rows, "ingest", ingest_n, LIMIT), op), 0.7),
    ]
    small, large = _find(rows, "ingest", 1_000, OPERATOR), _find(rows, "ingest", 100_000, OPERATOR)
    growth = large.peak_rss_mb / small.peak_rss_mb if small and large and small.peak_rss_mb and large.peak_rss_mb else None
    out.append(Target("(c) peak RSS at 100k / at 1k chunks", growth, 2.0, higher_is_better=False))
    return out


def plot(rows: list[Row], path: Path, title: str) -> None:
    """Items/s vs N (adds at 10 and 100 docs, ingest beyond), log-log; hollow markers = extrapolated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for method, color in zip(METHODS, ("tab:red", "tab:orange", "tab:blue", "tab:gray")):
        points = sorted((r for r in rows if r.method == method and r.workload in ("add", "ingest")), key=lambda r: r.n)
        if not points:
            continue
        ax.plot([r.n for r in points], [r.items_per_s for r in points], color=color, label=method,
                linestyle="--" if method == LIMIT else "-")
        for r in points:
            ax.plot(r.n, r.items_per_s, "o", color=color, markerfacecolor="white" if r.extrapolated_from else color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("documents / chunks written (N)")
    ax.set_ylabel("items per second")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="hollow = extrapolated from a smaller N")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(rows: list[Row], found: list[Target], meta: dict[str, Any], results_dir: Path) -> str:
    """Write latest.md, latest.json and throughput.png; return the markdown."""
    results_dir.mkdir(parents=True, exist_ok=True)
    settings = "\n".join(f"- {k}: {v}" for k, v in meta.items())
    text = (
        f"# Benchmark results\n\n{settings}\n\n{markdown_table(rows)}\n\n"
        f"`{EXTRAPOLATED}` = extrapolated linearly from a smaller N (see notes). Ratios are wall-time ratios; "
        "'% of limit' = limit time / this time.\n\n## Targets\n\n" + "\n".join(t.line() for t in found) + "\n"
    )
    (results_dir / "latest.md").write_text(text)
    record = {
        "meta": meta,
        "rows": [asdict(r) | {"items_per_s": r.items_per_s} | derived(rows, r) for r in rows],
        "targets": [asdict(t) | {"met": t.met} for t in found],
    }
    (results_dir / "latest.json").write_text(json.dumps(record, indent=2))
    plot(rows, results_dir / "throughput.png", f"Write throughput ({meta.get('backend', '')})")
    return text
