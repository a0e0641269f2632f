"""Figures collected by the fault suite (and the integration tier's secret scan), published from one run.

Tests record what they did through the session-wide ``FIGURES`` (via the ``figures`` fixture, or by
importing it): faults injected (by kind), entities expected vs found after recovery, bad inputs tried
(by outcome: rejected with a message / a documented no-op / accepted as data), error messages checked,
the places the integration tier scanned for sentinel secrets, and secrets found (must stay 0).

Publishing: the deterministic figures of a full CI-suite run (``pytest -m "not slow"``) are rendered
into ``docs/faults.md`` (between ``<!-- fault-figures:begin default -->`` and its end marker, with
the figures as JSON) and into the README's fault table (between ``<!-- fault-figures:start -->`` and
``<!-- fault-figures:end -->``). ``tests/faults/test_published_figures.py`` runs last and fails
when the published figures differ from the ones this run computed; ``FAULTS_UPDATE_DOCS=1`` makes it
rewrite both instead. Timings and other measurements vary between runs: they are published with the
date of their run and are not compared.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS_PATH = REPO_ROOT / "docs" / "faults.md"
README_PATH = REPO_ROOT / "README.md"
MARKER = "<!-- fault-figures:{edge} {key} -->"  # docs/faults.md: one block per selection, "default" and "slow"
README_BEGIN, README_END = "<!-- fault-figures:start -->", "<!-- fault-figures:end -->"
JSON_PREFIX = "<!-- figures-json "
REFRESH_COMMAND = (
    'FAULTS_UPDATE_DOCS=1 bash scripts/test.sh   # or: FAULTS_UPDATE_DOCS=1 .venv/bin/python -m pytest -m "not slow"'
)
SLOW_REFRESH_COMMAND = "FAULTS_UPDATE_DOCS=1 .venv/bin/python -m pytest tests/faults -m slow"

# How a bad input ends, recorded from what the test saw (the outcome, the message, the data read back) before
# it asserts. Only "rejected" inputs fail the task; "noop" and "accepted" are legitimate; "mishandled" is a
# bad input that ended otherwise than its test expects (accepted when it must be refused, a message not
# naming the problem, or data written): it fails its test, and a run with any is never published.
REJECTED, NOOP, ACCEPTED, MISHANDLED = "rejected", "noop", "accepted", "mishandled"
OUTCOME_LABELS = {
    REJECTED: "rejected with a message naming the problem, nothing written",
    NOOP: "handled as a documented no-op",
    ACCEPTED: "accepted as data (injection payloads matched literally, a value that really has quotes, "
    "a re-typed metadata value, any token on Milvus Lite, a delete while the embedding API is down)",
    MISHANDLED: "mishandled (not rejected, a message not naming the problem, or data written)",
}


@dataclass
class FaultFigures:
    faults: Counter[str] = field(default_factory=Counter)
    entities_expected: int = 0
    entities_found: int = 0
    recoveries_checked: int = 0
    bad_inputs: dict[str, list[str]] = field(
        default_factory=lambda: {REJECTED: [], NOOP: [], ACCEPTED: [], MISHANDLED: []}
    )
    messages_checked: int = 0
    secrets_found: int = 0
    secret_leaks: list[str] = field(default_factory=list)
    places_scanned: list[str] = field(default_factory=list)
    measurements: dict[str, str] = field(default_factory=dict)

    # ----- recording ----------------------------------------------------------------------------
    def fault(self, kind: str, count: int = 1) -> None:
        if count:
            self.faults[kind] += count

    def entities(self, expected: int, found: int) -> None:
        self.recoveries_checked += 1
        self.entities_expected += expected
        self.entities_found += found

    def bad_input(self, name: str, outcome: str = REJECTED) -> None:
        self.bad_inputs[outcome].append(name)

    def message(self, text: str, secrets: list[str], where: str) -> None:
        self.messages_checked += 1
        leaked = [s for s in secrets if s and s in text]
        if leaked:
            self.secrets_found += len(leaked)
            self.secret_leaks.append(where)

    def secret_scan(self, place: str, found: int) -> None:
        """One place the integration tier searched for its sentinel secrets (logs, a table, ...)."""
        self.places_scanned.append(place)
        if found:
            self.secrets_found += found
            self.secret_leaks.append(place)

    def measure(self, name: str, value: str) -> None:
        self.measurements[name] = value

    @property
    def ran(self) -> bool:
        return bool(
            self.messages_checked
            or self.faults
            or self.recoveries_checked
            or self.places_scanned
            or any(self.bad_inputs.values())
        )

    # ----- the deterministic figures ------------------------------------------------------------
    def published(self) -> dict[str, Any]:
        """What is published and compared: the same for every passing run of the same selection."""
        return {
            "faults": dict(sorted(self.faults.items())),
            "faults_total": sum(self.faults.values()),
            "entities_expected": self.entities_expected,
            "entities_found": self.entities_found,
            "read_backs": self.recoveries_checked,
            "bad_inputs": {outcome: len(names) for outcome, names in self.bad_inputs.items()},
            "messages_checked": self.messages_checked,
            "places_scanned": len(self.places_scanned),
            "secrets_found": self.secrets_found,
        }

    # ----- rendering ----------------------------------------------------------------------------
    def lines(self, outcome: dict[str, int], selection: str) -> list[str]:
        figures = self.published()
        faults = ", ".join(f"{kind} {n}" for kind, n in figures["faults"].items()) or "none"
        bad = figures["bad_inputs"]
        out = [
            f"run: `pytest{selection}` on {time.strftime('%Y-%m-%d %H:%M')}; "
            + ", ".join(f"{n} {k}" for k, n in outcome.items() if n),
            f"faults injected: {figures['faults_total']} ({faults})",
            (
                f"entities expected vs found after recovery: {figures['entities_expected']} vs "
                f"{figures['entities_found']} ({figures['read_backs']} read-backs with pymilvus query, ids compared "
                "as sets and lists)"
            ),
            f"bad inputs tried: {sum(bad.values())}: "
            + "; ".join(f"{bad[key]} {OUTCOME_LABELS[key]}" for key in (REJECTED, NOOP, ACCEPTED, MISHANDLED)),
            f"error messages checked: {figures['messages_checked']}",
            f"places the integration tier scanned for sentinel secrets: {figures['places_scanned']}",
            f"secrets found (error messages and scanned places): {figures['secrets_found']}"
            + (f" ({', '.join(self.secret_leaks)})" if self.secret_leaks else ""),
        ]
        out += [f"{name}: {value}" for name, value in sorted(self.measurements.items())]
        return out

    def docs_block(self, outcome: dict[str, int], selection: str, key: str) -> str:
        begin, end = MARKER.format(edge="begin", key=key), MARKER.format(edge="end", key=key)
        command = REFRESH_COMMAND.split("   #")[0] if key == "default" else SLOW_REFRESH_COMMAND
        return "\n".join(
            [
                begin,
                f"<!-- generated by `{command}`; do not edit by hand -->",
                "",
                *(f"- {line}" for line in self.lines(outcome, selection)),
                "",
                f"{JSON_PREFIX}{json.dumps(self.published(), sort_keys=True)} -->",
                end,
            ]
        )


def _replace_block(text: str, begin: str, end: str, block: str) -> str:
    if begin in text and end in text:
        return re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, count=1, flags=re.DOTALL)
    return f"{text.rstrip()}\n\n{block}\n"


def published_json(text: str, key: str) -> dict[str, Any] | None:
    """The figures JSON stored in the ``key`` block of docs/faults.md, or None."""
    begin, end = MARKER.format(edge="begin", key=key), MARKER.format(edge="end", key=key)
    if begin not in text or end not in text:
        return None
    block = text[text.index(begin) : text.index(end)]
    match = re.search(re.escape(JSON_PREFIX) + r"(\{.*\}) -->", block)
    return json.loads(match.group(1)) if match else None


def readme_block(default: dict[str, Any], slow: dict[str, Any] | None) -> str:
    """The README's fault table, rendered from the CI run's figures and the slow run's (from docs/faults.md)."""

    def cell(figures: dict[str, Any] | None, render: Any) -> str:
        return render(figures) if figures else "–"

    def entities(f: dict[str, Any]) -> str:
        return f"{f['entities_expected']:,} vs {f['entities_found']:,}"

    def bad(outcome: str) -> Any:
        return lambda f: str(f["bad_inputs"].get(outcome, 0)) if sum(f["bad_inputs"].values()) else "–"

    faults = ", ".join(kind.replace("_", " ") for kind in default["faults"]) or "none"
    rows = [
        (
            f"faults injected ({faults})",
            cell(default, lambda f: str(f["faults_total"])),
            cell(slow, lambda f: str(f["faults_total"]) if f["faults_total"] else "–"),
        ),
        ("entities expected vs found after recovery", cell(default, entities), cell(slow, entities)),
        (f"bad inputs {OUTCOME_LABELS[REJECTED]}", cell(default, bad(REJECTED)), cell(slow, bad(REJECTED))),
        (f"bad inputs {OUTCOME_LABELS[NOOP]}", cell(default, bad(NOOP)), cell(slow, bad(NOOP))),
        (
            f"inputs that look bad but are {OUTCOME_LABELS[ACCEPTED]}",
            cell(default, bad(ACCEPTED)),
            cell(slow, bad(ACCEPTED)),
        ),
        (f"bad inputs {OUTCOME_LABELS[MISHANDLED]}", cell(default, bad(MISHANDLED)), cell(slow, bad(MISHANDLED))),
        (
            f"secrets found in {default['messages_checked']} error messages and {default['places_scanned']} places the "
            "integration tier scanned (task and trigger logs, component logs, trigger rows, XCom, rendered fields, "
            "every metadata table)",
            cell(default, lambda f: str(f["secrets_found"])),
            cell(slow, lambda f: str(f["secrets_found"]) if f["messages_checked"] or f["places_scanned"] else "–"),
        ),
    ]
    return "\n".join(
        [
            README_BEGIN,
            f"<!-- generated from docs/faults.md's figures by `{REFRESH_COMMAND.split('   #')[0]}`; "
            "do not edit by hand -->",
            "| | CI suite | slow suite (`scripts/test.sh --slow`) |",
            "| --- | --- | --- |",
            *(f"| {label} | {ci} | {slow_cell} |" for label, ci, slow_cell in rows),
            README_END,
        ]
    )


def write_docs(figures: FaultFigures, outcome: dict[str, int], selection: str, key: str) -> list[Path]:
    """Rewrite the ``key`` block of docs/faults.md and the README table from ``figures``; returns the files."""
    docs = DOCS_PATH.read_text() if DOCS_PATH.exists() else "# Fault suite\n"
    begin, end = MARKER.format(edge="begin", key=key), MARKER.format(edge="end", key=key)
    docs = _replace_block(docs, begin, end, figures.docs_block(outcome, selection, key))
    DOCS_PATH.write_text(docs)
    default, slow = published_json(docs, "default"), published_json(docs, "slow")
    if default is None:
        return [DOCS_PATH]
    readme = README_PATH.read_text()
    if README_BEGIN in readme and README_END in readme:
        README_PATH.write_text(_replace_block(readme, README_BEGIN, README_END, readme_block(default, slow)))
    return [DOCS_PATH, README_PATH]


FIGURES = FaultFigures()
