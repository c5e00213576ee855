"""Validation rejects what it does not allow: whole strings only, bounded messages.

The classic hole: ``re.match(r"^[a-z]+$", "web\\n")`` matches, because ``$``
also matches before a trailing newline; the newline then lands in
``config.yaml``, ``osquery.flags`` or a systemd unit. Every value below is
refused, exit 2, naming the file and key, and the message quotes a bounded,
escaped excerpt, never the whole value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetkit.foundation import validate
from fleetkit.foundation.inventory import NAME_RE, load_inventory
from fleetkit.foundation.selectors import parse_selector
from fleetkit.foundation.status import ConfigError, ExitStatus, UsageError
from tests.unit.test_settings import assert_bad_input, make_setup, provision_cli

HUGE = "A" * 1_000_000
ESCAPE = "\x1b]0;owned\x07\x1b[2J"


def inventory_with(tmp_path: Path, entry: dict[str, Any], group: str = "compute") -> Path:
    data = {
        "control_plane": {"hosts": {"orch-1": {"address": "127.0.0.1", "port": 1}}},
        group: {"hosts": {"node-1": {"port": 2, **entry}}},
    }
    (tmp_path / "inventory").mkdir(exist_ok=True)
    (tmp_path / "inventory" / "fleet.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "inventory"


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"address": "10.0.0.1\n"}, "compute.hosts.node-1.address"),
        ({"address": "10.0.0.1\nExecStartPre=/bin/sh"}, "compute.hosts.node-1.address"),
        ({"address": "[::1]"}, "compute.hosts.node-1.address"),
        ({"address": "host name"}, "compute.hosts.node-1.address"),
        ({"address": "a" * 254}, "compute.hosts.node-1.address"),
        ({"address": "10.0.0.1", "user": "root\n"}, "compute.hosts.node-1.user"),
        ({"address": "10.0.0.1", "labels": {"env": "prod\n"}}, "compute.hosts.node-1.labels.env"),
        ({"address": "10.0.0.1", "labels": {"env\n": "prod"}}, "compute.hosts.node-1.labels"),
        (
            {"address": "10.0.0.1", "identity_file": "/k\x1b[2J"},
            "compute.hosts.node-1.identity_file",
        ),
    ],
)
def test_inventory_values_must_match_whole(tmp_path: Path, entry: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_inventory(inventory_with(tmp_path, entry))
    assert caught.value.key == key
    assert caught.value.exit_status == ExitStatus.BAD_INPUT
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


def test_host_and_group_names_must_match_whole(tmp_path: Path) -> None:
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "fleet.yaml").write_text(
        yaml.safe_dump({"compute": {"hosts": {"node-1\n": {"address": "10.0.0.1"}}}})
    )
    with pytest.raises(ConfigError, match=r"invalid host name 'node-1\\n'"):
        load_inventory(tmp_path / "inventory")
    (tmp_path / "inventory" / "fleet.yaml").write_text(
        yaml.safe_dump({"web\n": {"hosts": {"node-1": {"address": "10.0.0.1"}}}})
    )
    with pytest.raises(ConfigError, match=r"invalid group name 'web\\n'"):
        load_inventory(tmp_path / "inventory")


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "fe80::1%eth0", "2001:db8::5", "node-1.lab", "n_1"]
)
def test_good_addresses_pass(tmp_path: Path, address: str) -> None:
    inventory = load_inventory(inventory_with(tmp_path, {"address": address}))
    assert inventory.get("node-1") is not None


def test_a_huge_hostile_value_is_quoted_as_a_bounded_excerpt(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_inventory(inventory_with(tmp_path, {"address": ESCAPE + HUGE}))
    message = str(caught.value)
    assert len(message) < 400
    assert "\x1b" not in message and "\\x1b" in message
    assert f"({len(ESCAPE) + len(HUGE)} characters)" in message


def test_modules_that_still_use_match_get_whole_string_patterns() -> None:
    # pack and policy names are checked with NAME_RE: the pattern itself is anchored with \Z.
    assert NAME_RE.match("rule_1") is not None
    assert NAME_RE.match("rule_1\n") is None
    assert validate.TABLE.match("curl\n") is None


@pytest.mark.parametrize(
    "text",
    ["env=prod\nx", "e\nnv=prod", "env=pr od", "env=" + "v" * 64, "env=٣", "k" * 70 + "=v"],
)
def test_selector_terms_must_match_whole(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_selector(text)
    assert caught.value.key == "--select"
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- settings

SETTINGS_CASES: list[tuple[dict[str, Any], str]] = [
    ({"osquery": {"version": "5.23.1\n"}}, "osquery.version"),
    ({"osquery": {"version": "5.23.1 --flagfile=/tmp/x"}}, "osquery.version"),
    ({"osquery": {"extensions_socket": "/var/osquery/osquery.em\n"}}, "osquery.extensions_socket"),
    ({"osquery": {"extensions_socket": "relative/osquery.em"}}, "osquery.extensions_socket"),
    ({"osquery": {"flags_file": "/etc/osquery/osquery flags"}}, "osquery.flags_file"),
    ({"osquery": {"disabled_tables": ["curl\n"]}}, "osquery.disabled_tables"),
    ({"osquery": {"disabled_tables": ["curl,carves"]}}, "osquery.disabled_tables"),
    ({"bacalhau": {"version": "v1.9.3\n"}}, "bacalhau.version"),
    ({"bacalhau": {"install_path": "/usr/local/bin/bacalhau%i"}}, "bacalhau.install_path"),
    ({"bacalhau": {"config_path": "/etc/bacalhau/$(id).yaml"}}, "bacalhau.config_path"),
    ({"bacalhau": {"data_dir": "/var/lib/bacalhau\nExecStart=/bin/sh"}}, "bacalhau.data_dir"),
    (
        {"bacalhau": {"container_engine_package": "docker.io; rm -rf /"}},
        "bacalhau.container_engine_package",
    ),
    ({"bacalhau": {"heartbeat_interval": "15s\n"}}, "bacalhau.heartbeat_interval"),
    ({"bacalhau": {"heartbeat_interval": "١٥s"}}, "bacalhau.heartbeat_interval"),
    ({"bacalhau": {"orchestrator_url": "http://10.0.0.1:1234\n"}}, "bacalhau.orchestrator_url"),
    ({"bacalhau": {"orchestrator_url": "http://x:1234/$(id)"}}, "bacalhau.orchestrator_url"),
    ({"bacalhau": {"node_token": {"env": "TOKEN\n"}}}, "bacalhau.node_token.env"),
    ({"query": {"image": "osquery/osquery:5.23.1\n"}}, "query.image"),
    ({"query": {"image": "osquery/osquery:5.23.1 --privileged"}}, "query.image"),
    ({"query": {"redact_columns": ["Username"]}}, "query.redact_columns"),
    ({"query": {"redact_columns": ["user\n"]}}, "query.redact_columns"),
    ({"query": {"timeout": float("nan")}}, "query.timeout"),
    ({"query": {"timeout": float("inf")}}, "query.timeout"),
    ({"hunt": {"scope": ["/var/www/**\n", "relative"]}}, "hunt.scope"),
    ({"hunt": {"scope": ["/srv/[ab]/*"]}}, "hunt.scope"),
    ({"hunt": {"scope": ["/srv/\x00"]}}, "hunt.scope"),
    ({"admin_networks": ["10.0.0.0/24\n"]}, "admin_networks"),
    ({"admin_networks": ["10.0.0.0/24; accept"]}, "admin_networks"),
    ({"cache_dir": "cache\x1b[2J"}, "cache_dir"),
]


@pytest.mark.parametrize(("change", "key"), SETTINGS_CASES)
def test_settings_strings_that_reach_hosts_must_match_whole(
    tmp_path: Path, change: dict[str, Any], key: str
) -> None:
    setup = make_setup(tmp_path, settings=change)
    outcome = provision_cli(setup)
    assert_bad_input(outcome, f"{setup.settings_file}: {key}: ")
    assert "\x1b" not in outcome.stderr


def test_a_bad_package_url_is_refused(tmp_path: Path) -> None:
    setup = make_setup(
        tmp_path,
        settings={"osquery": {"package": {"source": "https://x/o.deb';id;'", "sha256": "a" * 64}}},
    )
    assert_bad_input(provision_cli(setup), "osquery.package.source")


def test_environment_overrides_are_validated_too(tmp_path: Path) -> None:
    setup = make_setup(tmp_path)
    for environ, key in (
        ({"FLEETKIT_PARALLELISM": "٣"}, "FLEETKIT_PARALLELISM"),
        ({"FLEETKIT_QUERY_TIMEOUT": "nan"}, "FLEETKIT_QUERY_TIMEOUT"),
        ({"FLEETKIT_QUERY_TIMEOUT": "-1"}, "FLEETKIT_QUERY_TIMEOUT"),
        ({"FLEETKIT_ORCHESTRATOR_URL": "http://x:1\n"}, "bacalhau.orchestrator_url"),
    ):
        assert_bad_input(provision_cli(setup, environ=environ), key)


def test_good_values_still_pass() -> None:
    assert validate.matches(validate.IMAGE, "osquery/osquery:5.23.1-ubuntu22.04")
    assert validate.matches(
        validate.IMAGE, "registry.local:5000/team/osquery:5.23@sha256:" + "a" * 64
    )
    assert validate.matches(validate.OSQUERY_VERSION, "5.23.1")
    assert validate.matches(validate.BACALHAU_VERSION, "v1.9.3")
    assert validate.matches(validate.HOST_PATH, "/var/osquery/osquery.em")
    assert validate.valid_http_url("https://pkg.osquery.io/deb/osquery_5.23.1-1.linux_amd64.deb")
    assert not validate.valid_http_url("http://x:99999/")


def test_excerpt_is_bounded_and_escaped() -> None:
    assert validate.excerpt("short") == "'short'"
    shown = validate.excerpt(ESCAPE + HUGE)
    assert len(shown) < 100 and "\x1b" not in shown and shown.endswith("characters)")
    assert validate.excerpt({"a": HUGE}).endswith("characters)")
    assert "\x1b" not in validate.excerpt("\x1b[31m", quoted=False)


def test_a_secret_file_that_is_a_fifo_or_huge_is_refused_without_hanging(tmp_path: Path) -> None:
    import os

    setup = make_setup(tmp_path)
    token = tmp_path / "secrets" / "node_token"
    token.unlink()
    os.mkfifo(token)
    assert_bad_input(provision_cli(setup), "bacalhau.node_token", "not a regular file")
    token.unlink()
    token.write_text("x" * 70_000)
    assert_bad_input(provision_cli(setup), "bacalhau.node_token", "the limit is")
