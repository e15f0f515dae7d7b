"""The provider entry point registers the project's connection types with Airflow."""

from __future__ import annotations

import importlib


def test_entry_point_is_installed_and_loads():
    from importlib.metadata import entry_points

    points = [
        ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("include.provider")
    ]
    assert len(points) == 1, "the project is not installed (pip install -e .)"
    info = points[0].load()()
    assert info["package-name"] == "dunning-notify"
    types = {c["connection-type"]: c for c in info["connection-types"]}
    assert set(types) == {"smpp", "gsm_modem"}


def test_provider_info_passes_airflows_schema():
    import json

    import jsonschema
    from airflow import providers_manager

    from include.provider import get_provider_info

    schema_path = importlib.resources.files("airflow").joinpath("provider_info.schema.json")
    jsonschema.validate(get_provider_info(), json.loads(schema_path.read_text()))
    assert providers_manager  # imported for the schema's package


def test_smpp_connection_type_is_known_to_the_providers_manager():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "dunning-notify" in manager.providers
    hook = manager.hooks.get("smpp")
    assert hook is not None and hook.hook_class_name == "hooks.smpp.SmppHook"
    widgets = manager.connection_form_widgets
    assert "extra__smpp__window" in widgets
    assert "extra__smpp__source_addr" in widgets
