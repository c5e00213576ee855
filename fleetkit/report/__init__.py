"""The fleet report (one static HTML file) and the evidence bundle built on it.

The ``report`` command fills a :class:`~fleetkit.report.model.FleetReport`
from the history, then calls :func:`~fleetkit.report.html.write_report` or
:func:`~fleetkit.report.bundle.write_bundle`; ``--check-bundle`` calls
:func:`~fleetkit.report.bundle.check_bundle`.
"""

from __future__ import annotations
