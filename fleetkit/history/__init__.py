"""Fleet memory: every run recorded, read back, compared (issue 10).

Layer: below the ask engine and the commands, above clients and foundation.
The engine hands each node's answer to a :class:`RunRecorder`; the history,
show, diff, policy, watch and report commands read through :class:`History`.
Storage: SQLite (``store``, ``database``), rows as compressed NDJSON blocks
(``rows``); optionally the same records in S3 (``s3layout``).
"""

from fleetkit.foundation.history_settings import HistorySettings
from fleetkit.history.diff import NodeChange, RowChange, RunDiff
from fleetkit.history.errors import (
    DiffMismatchError,
    HistoryError,
    NoHistoryError,
    UnknownRunError,
)
from fleetkit.history.model import (
    Coverage,
    NodeEntry,
    NodeState,
    Question,
    RecordOutcome,
    RunKind,
    RunStatus,
    RunSummary,
)
from fleetkit.history.policy import (
    PolicyState,
    PolicyVerdict,
    RecordedVerdict,
    Transition,
    Verdict,
)
from fleetkit.history.recorder import RunRecorder
from fleetkit.history.rows import RowBlock, as_osqueryi_output
from fleetkit.history.store import History, open_history

__all__ = [
    "Coverage",
    "DiffMismatchError",
    "History",
    "HistoryError",
    "HistorySettings",
    "NoHistoryError",
    "NodeChange",
    "NodeEntry",
    "NodeState",
    "PolicyState",
    "PolicyVerdict",
    "Question",
    "RecordOutcome",
    "RecordedVerdict",
    "RowBlock",
    "RowChange",
    "RunDiff",
    "RunKind",
    "RunRecorder",
    "RunStatus",
    "RunSummary",
    "Transition",
    "UnknownRunError",
    "Verdict",
    "as_osqueryi_output",
    "open_history",
]
