"""Retries in the integration DAGs may only hide the known Airflow race, apache/airflow#72716.

The test DAGs run with ``retries: 2`` because Airflow 3.3's scheduler can fail a deferred task whose
trigger fired within seconds ("Executor ... reported that the task instance ... finished with state
success, but the task instance's state attribute is queued"). Any other failure that a retry made
invisible is a real failure: ``unexplained_retries`` lists them, and the tests fail on any.

A failed try is explained when the scheduler logged the race for that very task instance (its line
names ``<TaskInstance: dag.task run_id ...>``) and recorded it in the metadata DB's ``log`` table as a
"state mismatch" for that try number. A cleared and re-run task (the UI's Clear) also leaves an earlier
try behind, but in state ``success``: only earlier tries that failed count.
"""

from __future__ import annotations

from typing import Any

from tests.integration.airflow_stack import DEFERRAL_RACE_MESSAGE

FAILED_TRY_STATES = ("failed", "up_for_retry")


def race_lines(scheduler_log: str, dag_id: str, task_id: str, run_id: str) -> list[str]:
    """Scheduler log lines that report apache/airflow#72716 for this task instance."""
    ti = f"<TaskInstance: {dag_id}.{task_id} {run_id} "
    return [line for line in scheduler_log.splitlines() if DEFERRAL_RACE_MESSAGE in line and ti in line]


def unexplained_retries(stack: Any, dag_id: str | None = None, run_id: str | None = None) -> list[str]:
    """Earlier tries that failed for anything but the race (empty when every retry is the race)."""
    where, params = "state IN (?, ?)", list(FAILED_TRY_STATES)
    if dag_id:
        where, params = where + " AND dag_id = ?", [*params, dag_id]
    if run_id:
        where, params = where + " AND run_id = ?", [*params, run_id]
    failed_tries = stack.query(
        f"SELECT dag_id, task_id, run_id, try_number, state FROM task_instance_history WHERE {where}", tuple(params)
    )
    if not failed_tries:
        return []
    scheduler_log = stack.process_log("scheduler")
    mismatches = {
        (row[0], row[1], row[2], row[3])
        for row in stack.query(
            "SELECT dag_id, task_id, run_id, try_number FROM log WHERE event = 'state mismatch' AND extra LIKE ?",
            (f"%{DEFERRAL_RACE_MESSAGE}%",),
        )
    }
    problems = []
    for dag, task, run, try_number, state in failed_tries:
        logged = race_lines(scheduler_log, dag, task, run)
        if logged and (dag, task, run, try_number) in mismatches:
            continue
        problems.append(
            f"{dag}.{task} {run} try {try_number} ended {state} and was retried, but not by apache/airflow#72716 "
            f"(race lines in the scheduler log for it: {len(logged)}, 'state mismatch' row for the try: "
            f"{(dag, task, run, try_number) in mismatches})"
        )
    return problems


def assert_no_unexplained_retries(stack: Any, dag_id: str | None = None, run_id: str | None = None) -> None:
    problems = unexplained_retries(stack, dag_id, run_id)
    if problems:
        logs = []
        for problem in problems[:3]:
            dag, rest = problem.split(".", 1)
            task, run = rest.split(" ", 2)[:2]
            logs.append(stack.task_log(dag, run, task)[-2000:])
        raise AssertionError("a retry hid a failure:\n" + "\n".join(problems) + "\n\n" + "\n---\n".join(logs))
