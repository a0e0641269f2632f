"""Figures collected by the fault suite, printed at the end of a run and written to ``docs/faults.md``.

Tests record what they did through the session-wide ``FIGURES`` (via the ``figures`` fixture):
faults injected (by kind), entities expected vs found after recovery, bad inputs tried, error
messages checked and secrets found in them (must stay 0). ``tests/faults/conftest.py`` prints them in
``pytest_terminal_summary`` and, with ``FAULTS_UPDATE_DOCS=1``, rewrites the figures block of
``docs/faults.md``.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "faults.md"
MARKER = "<!-- fault-figures:{edge} {key} -->"  # one block per selection: "default" and "slow"


@dataclass
class FaultFigures:
    faults: Counter[str] = field(default_factory=Counter)
    entities_expected: int = 0
    entities_found: int = 0
    recoveries_checked: int = 0
    bad_inputs: list[str] = field(default_factory=list)
    messages_checked: int = 0
    secrets_found: int = 0
    secret_leaks: list[str] = field(default_factory=list)
    measurements: dict[str, str] = field(default_factory=dict)

    def fault(self, kind: str, count: int = 1) -> None:
        if count:
            self.faults[kind] += count

    def entities(self, expected: int, found: int) -> None:
        self.recoveries_checked += 1
        self.entities_expected += expected
        self.entities_found += found

    def bad_input(self, name: str) -> None:
        self.bad_inputs.append(name)

    def message(self, text: str, secrets: list[str], where: str) -> None:
        self.messages_checked += 1
        leaked = [s for s in secrets if s and s in text]
        if leaked:
            self.secrets_found += len(leaked)
            self.secret_leaks.append(where)

    def measure(self, name: str, value: str) -> None:
        self.measurements[name] = value

    def lines(self, outcome: dict[str, int], selection: str) -> list[str]:
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults.items())) or "none"
        out = [
            f"run: `pytest tests/faults{selection}` on {time.strftime('%Y-%m-%d %H:%M')}; "
            + ", ".join(f"{n} {k}" for k, n in outcome.items() if n),
            f"faults injected: {sum(self.faults.values())} ({faults})",
            (f"entities expected vs found after recovery: {self.entities_expected} vs {self.entities_found} "
             f"({self.recoveries_checked} read-backs with pymilvus query, ids compared as sets and lists)"),
            f"bad inputs tried: {len(self.bad_inputs)} (all rejected or handled as documented)",
            f"error messages checked: {self.messages_checked}",
            f"secrets found in messages: {self.secrets_found}"
            + (f" ({', '.join(self.secret_leaks)})" if self.secret_leaks else ""),
        ]
        out += [f"{name}: {value}" for name, value in sorted(self.measurements.items())]
        return out

    def write_docs(self, outcome: dict[str, int], selection: str, path: Path = DOCS_PATH) -> None:
        key = "slow" if "slow" in selection and "not slow" not in selection else "default"
        begin, end = MARKER.format(edge="begin", key=key), MARKER.format(edge="end", key=key)
        block = "\n".join([begin, "", *(f"- {line}" for line in self.lines(outcome, selection)), "", end])
        text = path.read_text() if path.exists() else "# Fault suite\n"
        if begin in text and end in text:
            text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.DOTALL)
        else:
            text = f"{text.rstrip()}\n\n{block}\n"
        path.write_text(text)


FIGURES = FaultFigures()
