"""Every setting is configured from the environment, and a value that does not parse stops the start."""

import re
import subprocess
import sys

import pytest

from vpool.config import Settings

SUBNET = "an IPv4 /24 written like 10.213.0.0/24"
INTERFACE = "a network interface name (at most 15 letters, digits, '.', '-' or '_')"


def test_each_setting_reads_its_variable(monkeypatch):
    monkeypatch.setenv("VPOOL_TELEMETRY_RAW_RETENTION", "3600")
    monkeypatch.setenv("VPOOL_TELEMETRY_PROCESS", "0")
    monkeypatch.setenv("VPOOL_STORAGE_PATH", "/srv/images")
    monkeypatch.setenv("VPOOL_NETWORK_SUBNET", "10.213.7.0/24")
    s = Settings()
    assert (s.telemetry_raw_retention_s, s.telemetry_process, s.storage_path, s.network_subnet) == \
        (3600, False, "/srv/images", "10.213.7.0/24")
    monkeypatch.setenv("VPOOL_TELEMETRY_PROCESS", "")
    assert Settings().telemetry_process is True  # empty means unset


@pytest.mark.parametrize("name, value, says", [("SYNC_INTERVAL", "ten", "a number"),
                                                ("TASK_WORKERS", "1.5", "a whole number"),
                                                ("TELEMETRY_PROCESS", "yes", "0 or 1"),
                                                ("NETWORK_SUBNET", "10.213.0.0/16", SUBNET),
                                                ("NETWORK_SUBNET", "10.213.0.1/24", SUBNET),
                                                ("NETWORK_BRIDGE", "br0;reboot", INTERFACE),
                                                ("NETWORK_BRIDGE", "a-bridge-name-too-long", INTERFACE)])
def test_a_value_that_does_not_parse_names_the_variable(monkeypatch, name, value, says):
    monkeypatch.setenv(f"VPOOL_{name}", value)
    with pytest.raises(ValueError, match=re.escape(f"VPOOL_{name} must be {says}, not '{value}'")):
        Settings()


def test_serve_refuses_a_bad_value_in_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "vpool.cli.main", "serve"], capture_output=True, text=True,
                         env={"VPOOL_DATA_DIR": str(tmp_path), "VPOOL_SYNC_INTERVAL": "soon", "PATH": "/usr/bin:/bin"},
                         timeout=60)
    assert run.returncode != 0
    assert run.stderr.strip() == "error: VPOOL_SYNC_INTERVAL must be a number, not 'soon'"
    assert not any(tmp_path.iterdir())  # nothing was created
