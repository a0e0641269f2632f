from __future__ import annotations

from importlib.metadata import entry_points

from airflow_provider_milvus.get_provider_info import get_provider_info


def test_registered_through_the_airflow_entry_point():
    names = {ep.value for ep in entry_points(group="apache_airflow_provider")}
    assert "airflow_provider_milvus.get_provider_info:get_provider_info" in names


def test_milvus_connection_type_declares_its_form():
    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["connection-type"] == "milvus"
    assert conn_type["hook-class-name"] == "airflow_provider_milvus.hooks.milvus.MilvusHook"
    assert {"db_name", "secure", "timeout", "embedding_conn_id", "embedding_model"} <= set(conn_type["conn-fields"])
    behaviour = conn_type["ui-field-behaviour"]
    assert behaviour["relabeling"]["host"] == "URI"
    assert "schema" in behaviour["hidden-fields"]


def test_every_declared_module_imports():
    import importlib

    info = get_provider_info()
    for section in ("hooks", "operators", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
