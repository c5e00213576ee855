"""Readiness (``invoke verify``): is every node really able to answer a fleet query?

- :mod:`~fleetkit.readiness.catalog`: every check declared once (name,
  roles, dependencies, facts, judge); the probe script and skip rules derive
  from it.
- :mod:`~fleetkit.readiness.host_checks` / :mod:`~fleetkit.readiness.cluster`:
  the judges, pure functions of facts and the orchestrator's answers.
- :mod:`~fleetkit.readiness.engine`: one SSH probe per host, one node list,
  the report. :mod:`~fleetkit.readiness.render`: the table.

It sits below the commands and above the ask engine (the probe query's
answer is read with osquery's output contract from :mod:`fleetkit.ask.osqueryi`);
host facts come from :mod:`fleetkit.hostfacts`, shared with provisioning.
"""
