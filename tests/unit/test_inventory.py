"""Bad inventories are refused before any host is contacted: exit 2, file and key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetkit.foundation.inventory import load_inventory
from tests.unit.test_settings import assert_bad_input, make_setup, provision_cli


def test_group_vars_merge_into_hosts(tmp_path: Path) -> None:
    make_setup(tmp_path)
    inventory = load_inventory(tmp_path / "inventory")
    node = inventory.get("node-1")
    assert node is not None
    assert node.labels == {"role": "osquery", "env": "test"}
    assert [h.name for h in inventory.compute] == ["node-1", "node-2"]


def test_sample_inventory_is_not_loaded_but_is_valid(tmp_path: Path) -> None:
    """The repository's inventory/ defines no reachable host; its sample is a valid fleet."""
    repo_inventory = Path(__file__).resolve().parents[2] / "inventory"
    assert not list(repo_inventory.glob("*.yaml")) and not list(repo_inventory.glob("*.yml"))
    sample = repo_inventory / "example.yaml.sample"
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "fleet.yaml").write_text(sample.read_text())
    inventory = load_inventory(tmp_path / "inv")
    assert inventory.control_plane is not None
    assert len(inventory.compute) >= 2


BAD_INVENTORIES = {
    "bad yaml": ("compute:\n  hosts: {node-1: {address: 127.0.0.1\n", ["invalid YAML"]),
    "unknown group key": (
        "compute:\n  hostz:\n    node-1: {address: 127.0.0.1}\n",
        ["compute.hostz"],
    ),
    "unknown host key": (
        "compute:\n  hosts:\n    node-1: {address: 127.0.0.1, prot: 22}\n",
        ["compute.hosts.node-1.prot"],
    ),
    "duplicate host": (
        "compute:\n  hosts:\n    node-1: {address: 127.0.0.1}\n    node-1: {address: 127.0.0.2}\n",
        ["duplicate key", "node-1"],
    ),
    "duplicate endpoint": (
        "compute:\n  hosts:\n    node-1: {address: 127.0.0.1}\n    node-2: {address: 127.0.0.1}\n",
        ["duplicate host", "node-2"],
    ),
    "bad port": (
        "compute:\n  hosts:\n    node-1: {address: 127.0.0.1, port: 70000}\n",
        ["compute.hosts.node-1.port", "70000"],
    ),
    "missing address": (
        "compute:\n  hosts:\n    node-1: {port: 22}\n",
        ["compute.hosts.node-1", "missing address"],
    ),
    "not a mapping": ("- node-1\n- node-2\n", ["expected a mapping"]),
    "bad label value": (
        "compute:\n  hosts:\n    node-1: {address: 127.0.0.1, labels: {env: 'a b'}}\n",
        ["compute.hosts.node-1.labels.env"],
    ),
    "two control planes": (
        "control_plane:\n  hosts:\n    a: {address: 127.0.0.1}\n    b: {address: 127.0.0.2}\n",
        ["control_plane", "more than one"],
    ),
    "compute without control plane": (
        "compute:\n  hosts:\n    node-1: {address: 127.0.0.1}\n",
        ["control_plane", "orchestrator's address"],
    ),
    "hosts is a list": ("compute:\n  hosts: [node-1]\n", ["compute.hosts"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INVENTORIES))
def test_bad_inventory(tmp_path: Path, case: str) -> None:
    text, fragments = BAD_INVENTORIES[case]
    setup = make_setup(tmp_path, inventory=text)
    assert_bad_input(provision_cli(setup), str(setup.inventory_file), *fragments)
