"""The integration tier's retry check: only apache/airflow#72716 may hide behind a retry."""

from __future__ import annotations

import sqlite3

import pytest

from tests.integration.airflow_stack import DEFERRAL_RACE_MESSAGE
from tests.integration.retries import assert_no_unexplained_retries, unexplained_retries

RACE = (
    "Executor LocalExecutor(parallelism=32) reported that the task instance <TaskInstance: {ti} [queued] "
    "ti_id=0197> finished with state success, but the task instance's state attribute is queued. Learn more"
)


class FakeStack:
    """The two things the check reads: the metadata DB (task_instance_history, log) and the scheduler log."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE TABLE task_instance_history (dag_id, task_id, run_id, try_number, state)")
        self.db.execute("CREATE TABLE log (dag_id, task_id, run_id, try_number, event, extra)")
        self.scheduler_log = ""

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.db.execute(sql, params).fetchall()

    def process_log(self, name: str) -> str:
        return self.scheduler_log if name == "scheduler" else ""

    def task_log(self, dag_id: str, run_id: str, task_id: str) -> str:
        return f"log of {dag_id}.{task_id} {run_id}: ValueError: boom"

    def failed_try(self, task: str, try_number: int, *, race: bool, state: str = "up_for_retry") -> None:
        self.db.execute("INSERT INTO task_instance_history VALUES ('d', ?, 'r1', ?, ?)", (task, try_number, state))
        if race:
            line = RACE.format(ti=f"d.{task} r1")
            self.db.execute("INSERT INTO log VALUES ('d', ?, 'r1', ?, 'state mismatch', ?)", (task, try_number, line))
            self.scheduler_log += f"[scheduler] {line}\n"


def test_the_message_used_is_the_one_airflow_logs():
    assert DEFERRAL_RACE_MESSAGE in RACE


def test_a_retry_caused_by_the_race_is_explained():
    stack = FakeStack()
    stack.failed_try("add", 1, race=True)
    assert unexplained_retries(stack) == []
    assert_no_unexplained_retries(stack, "d", "r1")


def test_any_other_retried_failure_fails_the_check_with_the_task_log():
    stack = FakeStack()
    stack.failed_try("add", 1, race=True)
    stack.failed_try("search", 1, race=False)
    problems = unexplained_retries(stack)
    assert len(problems) == 1
    assert problems[0].startswith("d.search r1 try 1 ended up_for_retry")
    with pytest.raises(AssertionError, match=r"a retry hid a failure:\nd\.search r1 try 1(.|\n)*ValueError: boom"):
        assert_no_unexplained_retries(stack)


def test_the_race_of_another_task_or_try_explains_nothing():
    stack = FakeStack()
    stack.failed_try("add", 1, race=True)
    stack.failed_try("add", 2, race=False)  # the second failure of the same task was something else
    stack.failed_try("other", 1, race=False)
    assert [p.split(" ended")[0] for p in unexplained_retries(stack)] == ["d.add r1 try 2", "d.other r1 try 1"]


def test_a_log_line_without_the_state_mismatch_row_is_not_enough():
    stack = FakeStack()
    stack.failed_try("add", 1, race=False)
    stack.scheduler_log += RACE.format(ti="d.add r1") + "\n"
    assert len(unexplained_retries(stack)) == 1


def test_a_cleared_and_rerun_task_is_no_retried_failure():
    stack = FakeStack()
    stack.failed_try("add", 1, race=False, state="success")
    assert unexplained_retries(stack) == []
