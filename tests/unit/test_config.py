"""Settings from the environment: parsing, range checks, typos, and the README's table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracker.config import ConfigError, Settings, documented

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_without_variables() -> None:
    assert Settings.from_env({}) == Settings()


def test_values_are_parsed_by_type() -> None:
    s = Settings.from_env(
        {
            "TRACKER_TICK_MS": "250",
            "TRACKER_MAX_BATCH": "42",
            "TRACKER_WS_DEFLATE": "yes",
            "TRACKER_LOG_FORMAT": "TEXT",
            "REDIS_URL": "redis://example:6379/1",
            "TRACKER_OSMAND_PORT": "0",
            "TRACKER_RATE_LIMIT_IP": "off",
            "TRACKER_RATE_LIMIT_DEVICE": "5/second;100/minute",
        }
    )
    assert (s.tick_ms, s.max_batch, s.ws_deflate, s.log_format) == (250.0, 42, True, "text")
    assert s.redis_url == "redis://example:6379/1"
    assert s.osmand_port is None
    assert s.rate_limit_ip == ""
    assert s.rate_limit_device == "5/second;100/minute"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRACKER_TICK_MS": "fast"}, "TRACKER_TICK_MS='fast': expected a number"),
        ({"TRACKER_MAX_BATCH": "1.5"}, "TRACKER_MAX_BATCH='1.5': expected a whole number"),
        ({"TRACKER_MAX_BATCH": "0"}, "TRACKER_MAX_BATCH='0': must be at least 1"),
        ({"TRACKER_MAX_FUTURE_S": "-5"}, "TRACKER_MAX_FUTURE_S='-5': must be at least 0"),
        ({"TRACKER_MAX_FUTURE_S": "nan"}, "expected a finite number"),
        ({"TRACKER_WS_DEFLATE": "maybe"}, "TRACKER_WS_DEFLATE='maybe': expected true or false"),
        ({"TRACKER_LOG_FORMAT": "xml"}, "expected one of json, text"),
        ({"TRACKER_RATE_LIMIT_IP": "5/fortnight"}, "TRACKER_RATE_LIMIT_IP='5/fortnight'"),
        (
            {"TRACKER_RETENTON_DAYS": "30"},
            "TRACKER_RETENTON_DAYS: unknown setting (did you mean TRACKER_RETENTION_DAYS?)",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_variables_read_elsewhere_are_not_typos() -> None:
    Settings.from_env({"TRACKER_SQL_DIR": "/x", "TRACKER_WEB_DIR": "/y", "TRACKER_URL": "z"})


def test_every_setting_is_in_the_readme_table_with_its_default() -> None:
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    table = {
        cells[0].strip("` "): cells[1].strip()
        for line in section.splitlines()
        if line.startswith("| `")
        for cells in [line.strip("|").split("|")]
    }
    for env, default, _ in documented():
        assert env in table, f"{env} is missing from the README's configuration table"
        shown = table[env].strip("`")
        assert shown == default, f"{env}: README says {shown}, the code {default}"


def test_a_config_error_stops_the_server_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["TRACKER_COMMIT_INTERVAL_MS"] = "soon"
    done = subprocess.run(
        [sys.executable, "-m", "tracker.tools.cli", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "tracker: configuration error: TRACKER_COMMIT_INTERVAL_MS='soon': expected a number"
    ]
    assert "Traceback" not in done.stdout + done.stderr
