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
    inclusive: bool = False  # for lower-is-better targets: value <= threshold

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        if self.higher_is_better:
            return self.value >= self.threshold
        return self.value <= self.threshold if self.inclusive else self.value < self.threshold

    def line(self) -> str:
        verdict = {True: "MET", False: "MISSED", None: "n/a"}[self.met]
        value = "not measured" if self.value is None else f"{self.value:.2f}"
        sign = ">=" if self.higher_is_better else ("<=" if self.inclusive else "<")
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


def kind_label(kind: str) -> str:
    """``search@100k`` -> ``search over 100k``; ``search_by_vector`` -> ``search by vector``."""
    return kind.replace("@", " over ").replace("_", " ")


def markdown_table(rows: list[Row]) -> str:
    header = (
        "| workload | N | method | wall s | items/s | × (a) sync | × (b) gather | % of limit "
        "| peak RSS MB | peak in-flight emb. req. | notes |"
    )
    lines = [header, "|" + "---|" * 11]
    order = {"add": 0, "search": 1, "search_by_vector": 1.5, "delete": 3, "ingest": 4}
    for row in sorted(rows, key=lambda r: (order.get(r.workload, 2), r.n, METHODS.index(r.method))):
        d = derived(rows, row)
        mark = EXTRAPOLATED if row.extrapolated_from else ""
        spread = f"median of {row.reps}" if row.reps > 1 else ""
        notes = "; ".join(x for x in (spread, row.notes) if x)
        lines.append(
            f"| {kind_label(row.workload)} | {row.n:,} | {row.method} | {mark}{row.seconds:.3f} | {mark}{row.items_per_s:,.0f} "
            f"| {_fmt(d['vs_sync'], '{:.1f}x')} | {_fmt(d['vs_gather'], '{:.1f}x')} "
            f"| {_fmt(None if row.method == LIMIT else d['of_limit'], '{:.0%}')} "
            f"| {_fmt(row.peak_rss_mb, '{:.0f}')} | {_fmt(row.peak_in_flight, '{}')} | {notes} |"
        )
    return "\n".join(lines)


def targets(rows: list[Row], ingest_n: int = 10_000) -> list[Target]:
    """Issue 5's and issue 11's targets, each a ratio of two rows of this run."""
    add, search, delete = (_find(rows, kind, 100, OPERATOR) for kind in ("add", "search", "delete"))
    out = [
        Target(
            f"add 100: (c) speedup over (a) sync loop >= tutorial's {TUTORIAL_SPEEDUPS['add']:.1f}x",
            _ratio(_find(rows, "add", 100, SYNC), add),
            TUTORIAL_SPEEDUPS["add"],
        ),
        Target(
            "search 100: (c) speedup over (a) sync loop (issue 11: >= 40x)",
            _ratio(_find(rows, "search", 100, SYNC), search),
            40.0,
        ),
        Target("search 100: (c) fraction of the limit", _ratio(_find(rows, "search", 100, LIMIT), search), 0.7),
        Target("delete 100: (c) fraction of the limit", _ratio(_find(rows, "delete", 100, LIMIT), delete), 0.7),
    ]
    op = _find(rows, "ingest", ingest_n, OPERATOR)
    out += [
        Target(
            f"ingest {ingest_n:,}: (c) speedup over (a) sync loop (extrapolated)",
            _ratio(_find(rows, "ingest", ingest_n, SYNC), op),
            50.0,
        ),
        Target(
            f"ingest {ingest_n:,}: (c) speedup over (b) unbounded gather",
            _ratio(_find(rows, "ingest", ingest_n, GATHER), op),
            5.0,
        ),
        Target(
            f"ingest {ingest_n:,}: (c) fraction of the limit", _ratio(_find(rows, "ingest", ingest_n, LIMIT), op), 0.7
        ),
    ]
    small, large = _find(rows, "ingest", 1_000, OPERATOR), _find(rows, "ingest", 100_000, OPERATOR)
    growth = (
        large.peak_rss_mb / small.peak_rss_mb if small and large and small.peak_rss_mb and large.peak_rss_mb else None
    )
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
        ax.plot(
            [r.n for r in points],
            [r.items_per_s for r in points],
            color=color,
            label=method,
            linestyle="--" if method == LIMIT else "-",
        )
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


SUMMARY_WORKLOADS = (
    ("add", 100),
    ("search", 100),
    ("search_by_vector", 100),
    ("search@100k", 1000),
    ("delete", 100),
    ("ingest", 1000),
    ("ingest", 10_000),
    ("ingest", 100_000),
)


def summary_table(rows: list[Row]) -> str:
    """The README's short table: one line per workload."""
    lines = [
        "| workload | (a) sync s | (b) gather s | (c) operator s | (c) vs (a) | (c) vs (b) | (c) % of limit |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, n in SUMMARY_WORKLOADS:
        op = _find(rows, kind, n, OPERATOR)
        if op is None:
            continue
        cells = []
        for method in (SYNC, GATHER):
            row = _find(rows, kind, n, method)
            cells.append("–" if row is None else f"{EXTRAPOLATED if row.extrapolated_from else ''}{row.seconds:.2f}")
        d = derived(rows, op)
        base, _, corpus = kind.partition("@")
        label = f"{base} {n:,} over {corpus or '1k'}" if base == "search" else f"{kind} {n:,}"
        if kind == "search_by_vector":
            label = f"search {n:,} by vector over 1k"
        lines.append(
            f"| {label} | {cells[0]} | {cells[1]} | {op.seconds:.2f} | {_fmt(d['vs_sync'], '{:.1f}x')} "
            f"| {_fmt(d['vs_gather'], '{:.1f}x')} | {_fmt(d['of_limit'], '{:.0%}')} |"
        )
    return "\n".join(lines)


def nightly_table(result: Any) -> str:
    from bench.nightly import RUNS

    lines = [
        "| run | method | wall s | chunks | emb. requests | emb. inputs | written | deleted "
        "| stale-removal round trips | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in RUNS:
        for row in (r for r in result.rows if r.run == run):
            lines.append(
                f"| {run} | {row.method} | {row.seconds:.2f} | {row.chunks:,} | {row.embedding_requests:,} "
                f"| {row.embedding_inputs:,} | {row.written:,} | {row.deleted:,} | {row.stale_round_trips or '–'} "
                f"| {row.notes} |"
            )
    return "\n".join(lines)


def nightly_summary(result: Any) -> str:
    """The README's nightly table: ours vs the peer per run."""
    from bench.nightly import OURS, PEER, RUNS

    lines = [
        "| nightly corpus run | ours s | peer s | ours emb. inputs | peer emb. inputs | ours chunks written + deleted "
        "| peer chunks written + deleted |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in RUNS:
        ours, peer = result.find(OURS, run), result.find(PEER, run)
        if ours is None or peer is None:
            continue
        lines.append(
            f"| {run} | {ours.seconds:.2f} | {peer.seconds:.2f} | {ours.embedding_inputs:,} "
            f"| {peer.embedding_inputs:,} | {ours.churn:,} | {peer.churn:,} |"
        )
    return "\n".join(lines)


def db_growth_table(result: Any) -> str:
    lines = [
        "| corpus files | chunks | run | metadata DB growth (payload bytes) | XCom bytes in DB after run "
        "| `airflow dags test` s | emb. inputs |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in result.db_growth:
        chunks = "–" if entry.get("chunks") is None else f"{entry['chunks']:,}"
        lines.append(
            f"| {entry['files']:,} | {chunks} | {entry['run']} | {entry['growth_bytes']:,} | {entry['xcom_bytes']:,} "
            f"| {entry['dags_test_s']} | {entry['embedding_inputs']:,} |"
        )
    return "\n".join(lines)


def nightly_targets(result: Any) -> list[Target]:
    from bench.nightly import BARE, OURS, PEER, RUNS

    first, unchanged, edited = (result.find(OURS, r) for r in RUNS)
    peer_first, peer_unchanged = result.find(PEER, RUNS[0]), result.find(PEER, RUNS[1])
    bare = result.find(BARE, RUNS[0])
    out = [
        Target("nightly: first run / peer's first run", _ratio(first, peer_first), 1.0, False, True),
        Target(
            "nightly: unchanged re-run / peer's unchanged re-run",
            _ratio(unchanged, peer_unchanged),
            1.0,
            higher_is_better=False,
        ),
        Target(
            "nightly: chunks rewritten or deleted on the unchanged re-run (churn)",
            None if unchanged is None else unchanged.churn,
            0,
            False,
            True,
        ),
        Target("nightly: unchanged re-run / first run", _ratio(unchanged, first), 0.1, False, True),
        Target(
            "nightly: embedding inputs on the unchanged re-run",
            None if unchanged is None else unchanged.embedding_inputs,
            0,
            False,
            True,
        ),
        Target(
            f"nightly: embedding inputs on the edited re-run / chunks of the {result.edited_files} edited files "
            f"({result.edited_chunks})",
            None if edited is None or not result.edited_chunks else edited.embedding_inputs / result.edited_chunks,
            1.0,
            False,
            True,
        ),
        Target("nightly: first run / bare upsert of the same chunks", _ratio(first, bare), 2.0, False, True),
    ]
    sizes = sorted({e["files"] for e in result.db_growth})
    if len(sizes) >= 2:
        small = max(e["growth_bytes"] for e in result.db_growth if e["files"] == sizes[0])
        large = max(e["growth_bytes"] for e in result.db_growth if e["files"] == sizes[-1])
        out.append(
            Target(
                f"nightly: metadata DB growth per run at {sizes[-1]:,} files / at {sizes[0]:,} files "
                f"({sizes[-1] / sizes[0]:.0f}x the corpus)",
                large / small if small else None,
                2.0,
                higher_is_better=False,
            )
        )
    return out


def write_results(
    rows: list[Row], found: list[Target], meta: dict[str, Any], results_dir: Path, *, tag: str = "", nightly: Any = None
) -> str:
    """Write latest[-tag].md (committed), latest[-tag].json (gitignored), summary[-tag].md and the plot."""
    results_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"-{tag}" if tag else ""
    settings = "\n".join(f"- {k}: {v}" for k, v in meta.items())
    text = (
        f"# Benchmark results{f' ({tag})' if tag else ''}\n\n{settings}\n\n{markdown_table(rows)}\n\n"
        f"`{EXTRAPOLATED}` = extrapolated linearly from a smaller N (see notes). Ratios are wall-time ratios; "
        "'% of limit' = limit time / this time.\n\n## Targets\n\n" + "\n".join(t.line() for t in found) + "\n"
    )
    summary = f"{summary_table(rows)}\n"
    if nightly is not None:
        text += (
            f"\n## Nightly corpus\n\n{nightly.files:,} files, {nightly.corpus_bytes / 1e6:.1f} MB; "
            f"{nightly.edited_files} edited, {nightly.deleted_files} deleted before the third run.\n\n"
            f"{nightly_table(nightly)}\n"
        )
        if nightly.db_growth:
            text += f"\nMetadata DB growth (`airflow dags test`, sqlite):\n\n{db_growth_table(nightly)}\n"
        text += "\n### Nightly targets\n\n" + "\n".join(t.line() for t in nightly_targets(nightly)) + "\n"
        summary += f"\n{nightly_summary(nightly)}\n"
    (results_dir / f"latest{suffix}.md").write_text(text)
    (results_dir / f"summary{suffix}.md").write_text(summary)
    record = {
        "meta": meta,
        "rows": [asdict(r) | {"items_per_s": r.items_per_s} | derived(rows, r) for r in rows],
        "targets": [asdict(t) | {"met": t.met} for t in found],
        "nightly": nightly.to_dict() if nightly is not None else None,
    }
    (results_dir / f"latest{suffix}.json").write_text(json.dumps(record, indent=2))
    plot(rows, results_dir / f"throughput{suffix}.png", f"Write throughput ({meta.get('backend', '')})")
    return text


def rerender(json_path: Path) -> str:
    """Rewrite a run's markdown files from its JSON record (presentation changes without re-running)."""
    from dataclasses import fields

    from bench.nightly import NightlyResult, NightlyRow

    record = json.loads(json_path.read_text())
    names = {f.name for f in fields(Row)}
    rows = [Row(**{k: v for k, v in r.items() if k in names}) for r in record["rows"]]
    nightly = None
    if record.get("nightly"):
        data = dict(record["nightly"])
        row_names = {f.name for f in fields(NightlyRow)}
        data["rows"] = [NightlyRow(**{k: v for k, v in r.items() if k in row_names}) for r in data["rows"]]
        nightly = NightlyResult(**data)
    tag = json_path.stem.removeprefix("latest").removeprefix("-")
    return write_results(rows, targets(rows), record["meta"], json_path.parent, tag=tag, nightly=nightly)


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        rerender(Path(name))
        print(f"re-rendered {name}")
