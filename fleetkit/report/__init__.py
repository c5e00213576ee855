"""The fleet report (one static HTML file) and the evidence bundle built on it.

The ``report`` command fills a :class:`~fleetkit.report.model.FleetReport`
from the history (:mod:`~fleetkit.report.fromhistory`), then calls
:func:`~fleetkit.report.html.write_report` or, with the chosen runs' outputs
(:mod:`~fleetkit.report.evidence`), :func:`~fleetkit.report.bundle.write_bundle`;
``--check-bundle`` calls :func:`~fleetkit.report.bundlecheck.check_bundle`.
"""

from __future__ import annotations
