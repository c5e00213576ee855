"""fleetkit: from bare Linux machines to one trustworthy fleet-wide osquery answer."""

from __future__ import annotations

__version__ = "0.1.0"
