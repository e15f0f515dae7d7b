"""Provider information that registers the project's connection types with Airflow.

Airflow's providers manager finds this through the ``apache_airflow_provider`` entry point in
pyproject.toml, so the ``smpp`` and ``gsm_modem`` connection types and their fields appear in the
UI's connection form on every machine where the project is installed. The fields are declared
here (``conn-fields``), the Airflow 3.2+ way, instead of through hook methods.
"""

from __future__ import annotations

from typing import Any


def _field(label: str, kind: str, default: Any = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": [kind, "null"]}
    if default is not None:
        schema["default"] = default
    schema.update(extra.pop("schema", {}))
    return {"label": label, "schema": schema, **extra}


SMPP_FIELDS: dict[str, Any] = {
    "system_type": _field("System type", "string"),
    "bind_mode": _field(
        "Bind mode",
        "string",
        "transceiver",
        schema={"enum": ["transceiver", "transmitter", "receiver"]},
        description="transceiver, or transmitter for sending with a separate receiver bind",
    ),
    "source_addr": _field("Source address", "string", description="Sender code, e.g. 12366 or 95598"),
    "source_addr_ton": _field("Source TON", "integer", 0),
    "source_addr_npi": _field("Source NPI", "integer", 1),
    "window": _field("Window (outstanding submit_sm)", "integer", 10),
    "rate_limit": _field("Rate limit (messages/s, 0 = none)", "number", 0),
    "enquire_link_interval": _field("enquire_link interval (s)", "integer", 30),
    "registered_delivery": _field("Request delivery receipts", "boolean", True),
    "validity_minutes": _field("Validity (minutes)", "integer", 1440),
    "max_parts": _field("Maximum parts per message", "integer", 6),
    "connect_timeout": _field("Connect timeout (s)", "number", 10),
    "connect_attempts": _field("Connect attempts", "integer", 3),
    "response_timeout": _field("Response timeout (s)", "number", 30),
    "dest_addr_ton": _field("Destination TON", "integer", 0),
    "dest_addr_npi": _field("Destination NPI", "integer", 1),
    "receipt_ids_decimal": _field(
        "Receipt ids are decimal",
        "boolean",
        False,
        description="The SMSC writes receipt ids in decimal while submit_sm_resp ids are hex",
    ),
}

GSM_MODEM_FIELDS: dict[str, Any] = {
    "baud_rate": _field("Baud rate", "integer", 115200),
    "sim_pin": _field("SIM PIN", "string", schema={"format": "password"}),
    "smsc_number": _field("SMSC number", "string"),
    "vendor": _field("Vendor profile", "string", "simcom", schema={"enum": ["simcom", "quectel", "generic"]}),
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider description Airflow reads at start-up."""
    return {
        "package-name": "dunning-notify",
        "name": "Dunning notifications",
        "description": "SMPP and GSM modem hooks for dunning (催缴) SMS and voice reminders.",
        "connection-types": [
            {
                "connection-type": "smpp",
                "hook-class-name": "hooks.smpp.SmppHook",
                "hook-name": "SMPP",
                "conn-fields": SMPP_FIELDS,
                "ui-field-behaviour": {
                    "hidden-fields": ["schema"],
                    "relabeling": {"login": "System ID"},
                    "placeholders": {"host": "smsc.example.net", "port": "2775"},
                },
            },
            {
                "connection-type": "gsm_modem",
                "hook-class-name": "hooks.gsm_modem.GsmModemHook",
                "hook-name": "GSM modem",
                "conn-fields": GSM_MODEM_FIELDS,
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "password", "port"],
                    "relabeling": {"host": "Serial port or URL"},
                    "placeholders": {"host": "/dev/ttyUSB0 or socket://127.0.0.1:7000"},
                },
            },
        ],
    }
