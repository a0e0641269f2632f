"""The Milvus connection form in the real Airflow 3 UI: declared fields render, save, and the Test button works.

Drives ``airflow api-server`` (see ``conftest.py``) in headless Chromium. Elements are found by role and label,
never by CSS class or sleeps. Screenshots go to ``test-artifacts/browser/``; with ``UPDATE_DOCS_SCREENSHOTS=1``
the form screenshots are also copied to ``docs/images/`` for the README and ``docs/connection.md``.

Airflow 3.3.2 quirk: the connection list's Test button posts ``port: 0`` for a connection saved without a port,
and the API then answers 400 "The host or port to test differs from the stored connection" (fixed upstream by
apache/airflow#73298). The tests therefore enter the address as URI ``http://127.0.0.1`` plus Port, which also
covers the hook's URI + Port merge.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import expect  # a [test] dependency: a missing install fails loudly, never skips

from airflow_provider_milvus.get_provider_info import get_provider_info

from tests.browser.conftest import REPO_ROOT, ApiServer

if TYPE_CHECKING:
    from airflow_provider_milvus.local_server import LocalServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

(MILVUS_TYPE,) = get_provider_info()["connection-types"]
CONN_FIELDS: dict[str, dict[str, Any]] = MILVUS_TYPE["conn-fields"]
BEHAVIOUR: dict[str, Any] = MILVUS_TYPE["ui-field-behaviour"]
PLACEHOLDERS: dict[str, str] = BEHAVIOUR["placeholders"]
RELABEL: dict[str, str] = BEHAVIOUR["relabeling"]

TOKEN = "root:Milvus"
TEST_TIMEOUT_MS = 30_000  # the Test button waits for the hook's real call (form timeout is 5 s)
DOCS_IMAGES = REPO_ROOT / "docs" / "images"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _open_add_connection_form(page: Any, server: ApiServer) -> Any:
    """Admin > Connections > Add Connection, as a user clicks through it; returns the dialog."""
    page.goto(f"{server.base_url}/")
    page.get_by_role("button", name="Admin", exact=True).click()
    page.get_by_role("menuitem", name="Connections", exact=True).click()
    expect(page).to_have_url(re.compile(r"/connections$"))
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name="Add Connection")).to_be_visible()
    return dialog


def _choose_milvus(page: Any, dialog: Any, conn_id: str) -> None:
    dialog.get_by_role("textbox", name="Connection ID").fill(conn_id)
    connection_type = dialog.get_by_role("combobox", name="Connection Type")
    connection_type.fill("Milvus")
    page.get_by_role("option", name="Milvus", exact=True).click()
    expect(dialog.get_by_role("textbox", name=RELABEL["host"], exact=True)).to_be_visible()


def _extra_field(dialog: Any, label: str) -> Any:
    """The form group of one extra field. The 3.3 UI does not tie text inputs to their label, so go by group."""
    return dialog.get_by_role("group").filter(has=dialog.page.get_by_text(label, exact=True))


def _fill_standard_fields(dialog: Any, *, port: int) -> None:
    dialog.get_by_role("textbox", name=RELABEL["host"], exact=True).fill("http://127.0.0.1")
    dialog.get_by_role("spinbutton", name="Port", exact=True).fill(str(port))
    dialog.get_by_role("textbox", name=RELABEL["password"], exact=True).fill(TOKEN)


def _open_extra_fields(dialog: Any) -> None:
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    expect(_extra_field(dialog, CONN_FIELDS["db_name"]["label"]).get_by_role("textbox")).to_be_visible()


def _fill_extra_fields(dialog: Any) -> None:
    _extra_field(dialog, CONN_FIELDS["db_name"]["label"]).get_by_role("textbox").fill("default")
    dialog.get_by_role("spinbutton", name=CONN_FIELDS["timeout"]["label"], exact=True).fill("5")


def _save(page: Any, dialog: Any, conn_id: str) -> Any:
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=conn_id, exact=True))
    expect(row).to_be_visible()
    return row


def _press_test(page: Any, row: Any, title: str) -> Any:
    row.get_by_role("button", name="Test Connection").click()
    toast = page.get_by_role("status").filter(has_text=title)
    expect(toast).to_be_visible(timeout=TEST_TIMEOUT_MS)
    return toast


def _stored_connection(server: ApiServer, conn_id: str) -> dict[str, Any]:
    # SimpleAuthManager "all admins" mode authorizes every request, so the REST API needs no token here.
    with urllib.request.urlopen(f"{server.base_url}/api/v2/connections/{conn_id}", timeout=10) as response:
        return json.loads(response.read())


def _screenshot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / name), animations="disabled", caret="hide")


def _docs_screenshot(dialog: Any, artifacts: Path, docs_name: str) -> None:
    """The dialog alone, as the docs show it; copied into docs/images/ only when UPDATE_DOCS_SCREENSHOTS=1."""
    path = artifacts / f"docs-{docs_name}"
    dialog.screenshot(path=str(path), animations="disabled", caret="hide")
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / docs_name)


def test_milvus_form_renders_saves_and_tests(
    page: Any, airflow_api_server: ApiServer, milvus_lite: LocalServer, artifacts_dir: Path
) -> None:
    dialog = _open_add_connection_form(page, airflow_api_server)
    _choose_milvus(page, dialog, "milvus_default")

    # Standard fields: relabelled, with the provider's placeholders; Schema hidden; the token is masked.
    uri = dialog.get_by_role("textbox", name=RELABEL["host"], exact=True)
    user = dialog.get_by_role("textbox", name=RELABEL["login"], exact=True)
    token = dialog.get_by_role("textbox", name=RELABEL["password"], exact=True)
    port = dialog.get_by_role("spinbutton", name="Port", exact=True)
    expect(uri).to_have_attribute("placeholder", PLACEHOLDERS["host"])
    expect(user).to_have_attribute("placeholder", PLACEHOLDERS["login"])
    expect(token).to_have_attribute("placeholder", PLACEHOLDERS["password"])
    expect(token).to_have_attribute("type", "password")
    expect(port).to_have_attribute("placeholder", PLACEHOLDERS["port"])
    for generic_label in ("Schema", "Host", "Login", "Password"):
        expect(dialog.get_by_text(generic_label, exact=True)).to_have_count(0)
    _screenshot(page, artifacts_dir, "01-milvus-selected.png")
    _docs_screenshot(dialog, artifacts_dir, "milvus-connection-form.png")

    _fill_standard_fields(dialog, port=milvus_lite.port)
    _screenshot(page, artifacts_dir, "02-standard-fields-filled.png")

    # Extra fields: every declared field with its label and help text.
    _open_extra_fields(dialog)
    page.set_viewport_size({"width": 1280, "height": 1500})  # the whole extra-fields panel in one picture
    _docs_screenshot(dialog, artifacts_dir, "milvus-connection-extra-fields.png")
    for name, field in CONN_FIELDS.items():
        group = _extra_field(dialog, field["label"])
        expect(group, f"extra field {name}").to_have_count(1)
        expect(group).to_contain_text(field["description"])
    expect(dialog.get_by_role("checkbox", name=CONN_FIELDS["secure"]["label"], exact=True)).not_to_be_checked()
    # String fields with JSON-schema "examples" get a suggestion list (the 3.3 UI drops extra-field placeholders).
    # (an input with a datalist has the combobox role)
    model_input = _extra_field(dialog, CONN_FIELDS["embedding_model"]["label"]).get_by_role("combobox")
    list_id = model_input.get_attribute("list")
    assert list_id, "embedding_model should offer its examples as a datalist"
    suggestions = dialog.locator(f"datalist[id='{list_id}'] option")
    expect(suggestions).to_have_count(len(CONN_FIELDS["embedding_model"]["schema"]["examples"]))
    assert (
        suggestions.evaluate_all("options => options.map(o => o.value)")
        == (CONN_FIELDS["embedding_model"]["schema"]["examples"])
    )
    _fill_extra_fields(dialog)
    _screenshot(page, artifacts_dir, "03-extra-fields-filled.png")
    page.set_viewport_size({"width": 1280, "height": 1000})

    row = _save(page, dialog, "milvus_default")
    stored = _stored_connection(airflow_api_server, "milvus_default")
    assert stored["conn_type"] == "milvus"
    assert (stored["host"], stored["port"], stored["schema"]) == ("http://127.0.0.1", milvus_lite.port, None)
    assert json.loads(stored["extra"])["db_name"] == "default"
    assert stored["password"] == "***"  # never sent back to the browser

    toast = _press_test(page, row, "Test Connection Successful")
    expect(toast).to_contain_text(f"at http://127.0.0.1:{milvus_lite.port}, database 'default'")
    expect(toast).to_contain_text("Connected to Milvus")
    _screenshot(page, artifacts_dir, "04-test-success.png")


def test_milvus_test_button_names_the_problem_when_nothing_listens(
    page: Any, airflow_api_server: ApiServer, artifacts_dir: Path
) -> None:
    port = _closed_port()
    dialog = _open_add_connection_form(page, airflow_api_server)
    _choose_milvus(page, dialog, "milvus_ui_closed")
    _fill_standard_fields(dialog, port=port)
    _open_extra_fields(dialog)
    _fill_extra_fields(dialog)
    row = _save(page, dialog, "milvus_ui_closed")

    toast = _press_test(page, row, "Test Connection Failed")
    expect(toast).to_contain_text("Could not connect")
    expect(toast).to_contain_text(f"127.0.0.1:{port}")
    expect(toast).to_contain_text("Milvus did not answer. Check the connection's URI and port")
    expect(toast).not_to_contain_text(TOKEN)
    _screenshot(page, artifacts_dir, "05-test-failure.png")
