"""The demo's front door: clear one-line errors, no tracebacks."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_port_in_use_is_a_clear_message(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "include.demo", "--root", str(REPO), "--smsc-port", str(port)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert f"SMSC_PORT={port + 1}" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_root_is_a_clear_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "include.demo", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "is not the repository root" in result.stderr
    assert "Traceback" not in result.stderr


def test_make_refuses_an_old_python_with_a_clear_message(tmp_path):
    fake = tmp_path / "python-old"
    fake.write_text("#!/bin/sh\necho 'Python 3.9.2'\nexit 1\n")
    fake.chmod(0o755)
    result = subprocess.run(
        ["make", "-s", "-C", str(REPO), "-W", "requirements.txt", "install", f"PYTHON={fake}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "needs Python 3.11 or newer" in result.stdout + result.stderr
