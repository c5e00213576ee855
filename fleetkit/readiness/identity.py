"""The identity check: is the host's node named by the rule, and is it really this host's agent?

The orchestrator's word (the node that claims the host, by its
``fleetkit-host`` label or its node ID) is compared with the host's own,
read over SSH with a pinned key: the node name its agent persisted in
``$DataDir/system_metadata.yaml`` and its hostname (``uname -n``).

- node ID = inventory name, labels right: PASS;
- the node joined under another name first (Bacalhau persisted it and
  ignores ``--name`` since): WARN, ready, with the rename procedure;
- the node claiming the host is not the name this host's agent persisted
  (an impostor, or a stale record): FAIL;
- fleetkit's labels missing or out of date (provisioned before the labels
  existed, the machine renamed since): FAIL, provisioning fixes them.
"""

from __future__ import annotations

from typing import Any

from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.yamlfile import HOST_FILE_BYTES, parse_yaml
from fleetkit.hostfacts.facts import FileState
from fleetkit.hostfacts.identity import (
    HOST_LABEL,
    HOSTNAME_LABEL,
    Claim,
    machine_hostname,
    metadata_path,
)
from fleetkit.readiness.model import CheckResult, Subject, failed, passed, provision_fix, warned

NAME = "cluster.identity"


def persisted_name(file: FileState, path: str) -> str | None:
    """``NodeName`` of a ``system_metadata.yaml`` read from a host; None when unknown.

    The file comes from the host: bounded by the fact, parsed by the strict loader.
    """
    if not file.exists or file.truncated:
        return None
    try:
        data: Any = parse_yaml(file.text, file=path, max_bytes=HOST_FILE_BYTES)
    except ConfigError:
        return None
    value = data.get("NodeName") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def rename_fix(host: str, node_id: str, path: str) -> str:
    """How to give a node its inventory name: Bacalhau reads ``--name`` only while no
    name is persisted, and the old record stays at the orchestrator until deleted."""
    return (
        f"to rename it to {host}: stop its bacalhau agent; on {host}: sed -i '/^NodeName:/d' "
        f"{path}; run: invoke provision --hosts {host} (the agent starts again with --name "
        f"{host}); then delete the old record at the orchestrator: bacalhau node delete {node_id}"
    )


def check_identity(s: Subject, hostname: str | None, metadata: FileState) -> CheckResult:
    host, node = s.target, s.node
    if node is None:
        raise RuntimeError("the identity check was asked without the host's node (needs NODE)")
    claim = Claim.LABEL if node.labels.get(HOST_LABEL) == host.name else Claim.NODE_ID
    path = metadata_path(s.expected.bacalhau_data_dir)
    persisted = persisted_name(metadata, path)
    if persisted is not None and persisted != node.node_id:
        return failed(
            NAME,
            f"node {node.node_id} claims {host.name} (by its {claim}), but the agent on "
            f"{host.name} persisted the node name {persisted} in {path}: the node the "
            "orchestrator knows as this host is not this host's agent (an impostor holding "
            "the node token, or a stale record)",
            f"check it (bacalhau node describe {node.node_id}); reject it if it is not "
            f"{host.name} (bacalhau node reject {node.node_id}), then " + provision_fix(host.name),
        )
    stale = _label_problems(host.name, node.labels, machine_hostname(hostname))
    if stale:
        return failed(NAME, f"node {node.node_id}: {'; '.join(stale)}", provision_fix(host.name))
    where = f"persisted in {path}" if persisted else f"{path} not readable"
    if node.node_id != host.name:
        return warned(
            NAME,
            f"{host.name} joined the cluster as {node.node_id} (node name {where}; Bacalhau "
            f"ignores --name {host.name} once a name is persisted); recognised by its label "
            f"{HOST_LABEL}={host.name}",
            rename_fix(host.name, node.node_id, path),
        )
    return passed(
        NAME,
        f"node ID {node.node_id} ({where}), label {HOST_LABEL}={host.name}, "
        f"{HOSTNAME_LABEL}={node.labels.get(HOSTNAME_LABEL)}",
    )


def _label_problems(name: str, labels: dict[str, str], machine: str | None) -> list[str]:
    problems = []
    if labels.get(HOST_LABEL) != name:
        shown = labels.get(HOST_LABEL)
        problems.append(
            f"label {HOST_LABEL} is {shown!r}, expected {name!r}"
            if shown is not None
            else f"no {HOST_LABEL} label (matched by its node ID only)"
        )
    if machine is not None and labels.get(HOSTNAME_LABEL) != machine:
        problems.append(
            f"label {HOSTNAME_LABEL} is {labels.get(HOSTNAME_LABEL)!r}, but the machine is "
            f"named {machine!r}"
        )
    return problems
