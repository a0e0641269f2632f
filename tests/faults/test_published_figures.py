"""The fault figures published in docs/faults.md and the README are the ones this run computed.

Runs last (``tests/faults/conftest.py`` moves it after the integration tier). Only a full CI-suite run
(``pytest -m "not slow"``, as ``scripts/test.sh`` and ``.ci/run`` start it) computes the published
figures; a narrower run skips this check, saying why. With ``FAULTS_UPDATE_DOCS=1`` it rewrites the
generated blocks instead of comparing (never in CI: CI must not rewrite committed docs).
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest

from tests.faults.conftest import (
    _FAULTS_DIR as FAULTS_DIR,
    MULTIHOST_TESTS,
    OUTCOMES,
    SECRET_SCAN_TEST,
    contributes_figures,
)
from tests.faults.report import (
    DOCS_PATH,
    FIGURES,
    README_BEGIN,
    README_END,
    README_PATH,
    REFRESH_COMMAND,
    REPO_ROOT,
    published_json,
    readme_block,
    write_docs,
)

FULL_SELECTIONS = ("not slow", "")
CONTRIBUTING_PATHS = (FAULTS_DIR, SECRET_SCAN_TEST, *MULTIHOST_TESTS)
CHEAPEST_REFRESH = (
    'FAULTS_UPDATE_DOCS=1 .venv/bin/python -m pytest -m "not slow" tests/faults '
    "tests/integration/test_s3_staging.py tests/integration/test_secrets_never_leak.py "
    "tests/integration/test_several_writers.py tests/integration/test_triggerer_failover.py"
)


def _why_not_comparable(config: pytest.Config) -> str | None:
    """Why this run's figures are not those of the CI suite, or None when they are.

    The figures come only from tests/faults (minus the slow tests) and the integration tier's secret
    scan, so any run that selects all of those with the CI suite's marker selection computes them:
    the whole suite, or just those two paths.
    """
    markexpr = config.getoption("markexpr", "")
    if markexpr not in FULL_SELECTIONS:
        return f"-m {markexpr!r} is not the CI suite's selection (-m 'not slow')"
    if config.getoption("keyword", ""):
        return f"-k {config.getoption('keyword')!r} narrows the run"
    if config.getoption("deselect", None):
        return "--deselect narrows the run"
    if config.args_source == pytest.Config.ArgsSource.TESTPATHS:
        return None
    selected = [Path(config.invocation_params.dir, arg).resolve() for arg in config.args if "::" not in arg]
    missing = [path for path in CONTRIBUTING_PATHS if not any(path == s or s in path.parents for s in selected)]
    if missing:
        return "not selected: " + ", ".join(str(path.relative_to(REPO_ROOT)) for path in missing)
    return None


def _incomplete(session: pytest.Session) -> list[str]:
    """Contributing tests of this session that did not pass (their figures are missing or partial)."""
    return [
        f"{item.nodeid} ({OUTCOMES.get(item.nodeid, 'not run')})"
        for item in session.items
        if contributes_figures(item) and OUTCOMES.get(item.nodeid) != "passed"
    ]


def _not_comparable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must compute the published fault figures, but {reason}")
    pytest.skip(f"published fault figures not checked: {reason}")


def test_published_fault_figures_match_this_run(request: pytest.FixtureRequest) -> None:
    reason = _why_not_comparable(request.config)
    if reason:
        pytest.skip(
            f"published fault figures are those of the CI suite ({reason}); check them with {CHEAPEST_REFRESH}".replace(
                "FAULTS_UPDATE_DOCS=1 ", ""
            )
        )
    incomplete = _incomplete(request.session)
    if incomplete:
        _not_comparable(f"{len(incomplete)} contributing tests did not pass: {', '.join(incomplete[:5])}")
    if not FIGURES.places_scanned:
        _not_comparable("the integration tier's secret scan (tests/integration/test_secrets_never_leak.py) did not run")

    computed = FIGURES.published()
    if os.environ.get("FAULTS_UPDATE_DOCS") == "1":
        if os.environ.get("CI"):
            pytest.fail("FAULTS_UPDATE_DOCS=1 in CI: refresh the published figures locally and commit them")
        outcome = {"passed": sum(1 for v in OUTCOMES.values() if v == "passed")}
        written = write_docs(FIGURES, outcome, ' -m "not slow"', "default")
        print(f"\nfault figures written to {', '.join(str(p.relative_to(REPO_ROOT)) for p in written)}")
        return

    docs = DOCS_PATH.read_text()
    published = published_json(docs, "default")
    problems = []
    if published != computed:
        diff = difflib.unified_diff(
            json.dumps(published, indent=1, sort_keys=True).splitlines(),
            json.dumps(computed, indent=1, sort_keys=True).splitlines(),
            "published (docs/faults.md)",
            "computed by this run",
            lineterm="",
        )
        problems.append("\n".join(diff))
    readme = README_PATH.read_text()
    if README_BEGIN not in readme or README_END not in readme:
        problems.append(f"README.md has no {README_BEGIN} ... {README_END} block")
    else:
        shown = readme[readme.index(README_BEGIN) : readme.index(README_END) + len(README_END)]
        expected = readme_block(computed, published_json(docs, "slow"))
        if shown != expected:
            problems.append(
                "\n".join(
                    difflib.unified_diff(
                        shown.splitlines(), expected.splitlines(), "README.md", "computed by this run", lineterm=""
                    )
                )
            )
    assert not problems, (
        "the published fault figures disagree with this run's:\n"
        + "\n\n".join(problems)
        + f"\n\nIf the change is intended, refresh them and commit the result:\n    {REFRESH_COMMAND}"
        + f"\n(quicker, same figures: {CHEAPEST_REFRESH})"
    )


def test_the_readme_table_is_rendered_from_the_figures_in_docs_faults_md() -> None:
    """Cheap, in every run: the two published copies agree (the run-level check above needs the full suite)."""
    docs = DOCS_PATH.read_text()
    default, slow = published_json(docs, "default"), published_json(docs, "slow")
    assert default is not None, "docs/faults.md has no generated figures block"
    readme = README_PATH.read_text()
    shown = readme[readme.index(README_BEGIN) : readme.index(README_END) + len(README_END)]
    assert shown == readme_block(default, slow), f"README.md's fault table was edited by hand: {REFRESH_COMMAND}"
