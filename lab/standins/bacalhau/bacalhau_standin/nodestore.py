"""The orchestrator's node manager: membership, connection state, outboxes.

Membership decisions (approve/reject) are persisted in
``$DataDir/orchestrator/nodes.json`` so a restarted orchestrator keeps them;
connection state is rebuilt from the next heartbeats.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .httpapi import ApiError
from .models import rfc3339

APPROVED = "APPROVED"
PENDING = "PENDING"
REJECTED = "REJECTED"
CONNECTED = "CONNECTED"
DISCONNECTED = "DISCONNECTED"


@dataclass
class NodeRecord:
    info: dict[str, Any]
    membership: str
    status: str = CONNECTED
    last_heartbeat: float = field(default_factory=time.time)
    connected_since: float = field(default_factory=time.time)
    disconnected_since: float | None = None
    last_error: str = ""
    compute_seq: int = 0
    orchestrator_seq: int = 0
    outbox: list[dict[str, Any]] = field(default_factory=list)

    @property
    def node_id(self) -> str:
        return str(self.info["NodeID"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.info.get("Labels") or {})

    @property
    def schedulable(self) -> bool:
        return (
            self.info.get("NodeType") == "Compute"
            and self.membership == APPROVED
            and self.status == CONNECTED
        )

    def shape(self) -> dict[str, Any]:
        """``models.NodeState`` as v1.9 serialises it."""
        return {
            "Info": self.info,
            "Membership": self.membership,
            "Connection": self.status,
            "ConnectionState": {
                "Status": self.status,
                "LastHeartbeat": rfc3339(self.last_heartbeat),
                "ConnectedSince": rfc3339(self.connected_since),
                "DisconnectedSince": rfc3339(self.disconnected_since),
                "LastComputeSeqNum": self.compute_seq,
                "LastOrchestratorSeqNum": self.orchestrator_seq,
                "LastError": self.last_error,
            },
        }

    def send(self, command: dict[str, Any]) -> None:
        """Queue a command; it stays queued until the node acknowledges its Seq."""
        self.orchestrator_seq += 1
        self.outbox.append({**command, "Seq": self.orchestrator_seq})

    def acknowledge(self, seq: int) -> None:
        self.outbox = [c for c in self.outbox if c["Seq"] > seq]

    def mark_connected(self, now: float) -> bool:
        """Heartbeat bookkeeping; True when the node was disconnected before."""
        self.last_heartbeat = now
        self.compute_seq += 1
        if self.status == CONNECTED:
            return False
        self.status = CONNECTED
        self.connected_since = now
        self.last_error = ""
        return True


class NodeStore:
    """All nodes that ever joined (until deleted), keyed by NodeID."""

    def __init__(self, data_dir: Path, manual_approval: bool):
        self.path = data_dir / "orchestrator" / "nodes.json"
        self.manual_approval = manual_approval
        self.nodes: dict[str, NodeRecord] = {}
        self.decisions: dict[str, str] = self._load_decisions()

    def _load_decisions(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save_decisions(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.decisions, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)

    def join(self, info: dict[str, Any], now: float) -> NodeRecord:
        node_id = str(info["NodeID"])
        record = self.nodes.get(node_id)
        if record is None:
            default = PENDING if self.manual_approval else APPROVED
            membership = self.decisions.get(node_id, default)
            record = NodeRecord(
                info=info, membership=membership, last_heartbeat=now, connected_since=now
            )
            self.nodes[node_id] = record
            if node_id not in self.decisions:
                self.decisions[node_id] = membership
                self._save_decisions()
        else:
            record.info = info
            record.mark_connected(now)
        return record

    def find(self, ident: str) -> NodeRecord:
        """By full NodeID or unique prefix (404 otherwise)."""
        if ident in self.nodes:
            return self.nodes[ident]
        matches = [n for n in self.nodes.values() if n.node_id.startswith(ident)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ApiError(
                f"multiple nodes match prefix {ident!r}", "BadRequest", component="NodeManager"
            )
        raise ApiError(f"node not found: {ident}", "NotFound", component="NodeManager")

    def decide(self, record: NodeRecord, action: str) -> tuple[bool, str]:
        """Approve/reject/delete; (success, error) as ``PutNodeResponse``."""
        if action == "approve":
            if record.membership == APPROVED:
                return False, "node already approved"
            record.membership = APPROVED
        elif action == "reject":
            if record.membership == REJECTED:
                return False, "node already rejected"
            record.membership = REJECTED
        elif action == "delete":
            del self.nodes[record.node_id]
            self.decisions.pop(record.node_id, None)
            self._save_decisions()
            return True, ""
        else:
            raise ApiError(
                f"unsupported action {action!r}: expected approve, reject or delete",
                "BadRequest",
                component="NodeManager",
            )
        self.decisions[record.node_id] = record.membership
        self._save_decisions()
        return True, ""

    def disconnect_silent(self, now: float, timeout: float) -> list[NodeRecord]:
        """Nodes silent for longer than ``timeout`` become DISCONNECTED; returns them."""
        lost = []
        for record in self.nodes.values():
            if record.status == CONNECTED and now - record.last_heartbeat > timeout:
                record.status = DISCONNECTED
                record.disconnected_since = now
                record.last_error = f"no heartbeat for {timeout:g}s"
                lost.append(record)
        return lost
