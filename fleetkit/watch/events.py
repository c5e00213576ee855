"""What a notification says: a change seen by one run, with an id a receiver can de-duplicate.

The id is derived from the run id, the kind, the node and the subject (the
policy, or the hunt query and the row), so the same change of the same run
always gets the same id: a retried delivery, or the same run notified again
after a crash, is recognisably the same event. Text in events comes from
nodes (hostnames, row values): JSON keeps it exact, :meth:`Event.log_line`
escapes it, and row values are cut to a bounded size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fleetkit.foundation.terminal import terminal_safe

#: Version of the event payload; a receiver can refuse what it does not know.
EVENT_FORMAT = "fleetkit-event/1"
#: A hunt hit carries its row; bounded so one hostile row cannot make a huge POST.
MAX_ROW_COLUMNS = 64
MAX_VALUE_CHARS = 512
_LOG_FIELD_CHARS = 200


class EventKind(StrEnum):
    POLICY_FAILING = "policy_failing"
    POLICY_FIXED = "policy_fixed"
    HUNT_HIT = "hunt_hit"
    NODE_MISSING = "node_missing"
    #: More events than ``max_events_per_run``: this one says how many were left out.
    EVENTS_TRUNCATED = "events_truncated"


@dataclass(frozen=True)
class Event:
    id: str
    kind: EventKind
    run_id: str
    pack: str
    node_id: str
    hostname: str
    #: What changed on that node: ``pack/policy``, ``query`` (+ the row), or "" (the node itself).
    subject: str
    #: When the run that saw the change started (ISO 8601 UTC).
    at: str
    details: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def payload(self) -> dict[str, Any]:
        """The JSON object a webhook receives."""
        return {
            "format": EVENT_FORMAT,
            "id": self.id,
            "kind": self.kind.value,
            "run_id": self.run_id,
            "pack": self.pack,
            "nodeID": self.node_id,
            "hostname": self.hostname,
            "subject": self.subject,
            "at": self.at,
            "details": dict(self.details),
        }

    def body(self) -> bytes:
        """The exact bytes POSTed (and signed): compact, sorted keys, ASCII (every non-ASCII
        character escaped, so even a lone surrogate from a hostile node encodes)."""
        return json.dumps(self.payload(), sort_keys=True, separators=(",", ":")).encode()

    def log_line(self) -> str:
        """One terminal-safe line for the log sink."""
        parts = [
            f"watch: {self.kind.value}",
            f"pack={_field(self.pack)}",
            f"host={_field(self.node_id)}",  # the inventory name, as --hosts takes it
        ]
        if self.hostname and self.hostname != self.node_id:
            parts.append(f"hostname={_field(self.hostname)}")
        if self.subject:
            parts.append(f"subject={_field(self.subject)}")
        parts += [f"run={_field(self.run_id)}", f"id={self.id}"]
        return " ".join(parts)


def event_id(run_id: str, kind: EventKind, node_id: str, subject: str) -> str:
    """Stable: the same change seen by the same run always has the same id."""
    digest = hashlib.sha256(EVENT_FORMAT.encode())
    for part in (run_id, kind.value, node_id, subject):
        digest.update(b"\0" + part.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


def make_event(
    kind: EventKind,
    *,
    run_id: str,
    pack: str,
    at: str,
    node_id: str = "",
    hostname: str = "",
    subject: str = "",
    details: Mapping[str, Any] | None = None,
) -> Event:
    return Event(
        id=event_id(run_id, kind, node_id, subject),
        kind=kind,
        run_id=run_id,
        pack=pack,
        node_id=node_id,
        hostname=hostname,
        subject=subject,
        at=at,
        details=dict(details or {}),
    )


def bounded_row(row: Mapping[str, Any]) -> dict[str, str]:
    """A row as an event carries it: at most 64 columns, each value cut to 512 characters."""
    out: dict[str, str] = {}
    for key in sorted(row)[:MAX_ROW_COLUMNS]:
        value = str(row[key])
        out[str(key)[:MAX_VALUE_CHARS]] = (
            value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "..."
        )
    return out


def _field(text: str) -> str:
    safe = terminal_safe(text.encode("utf-8", "backslashreplace").decode("utf-8"))
    if len(safe) > _LOG_FIELD_CHARS:
        safe = safe[:_LOG_FIELD_CHARS] + "..."
    return safe if safe and " " not in safe and '"' not in safe else json.dumps(safe)
