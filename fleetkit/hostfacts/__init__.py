"""Host facts and changes (pyinfra-style): what a host looks like, and what to change.

- :mod:`~fleetkit.hostfacts.facts`: a fact is one shell command plus a pure
  parser (a file's content and mode, a package's version, a service's state,
  a socket). Provisioning and verify read the same facts.
- :mod:`~fleetkit.hostfacts.steps`: a step names the facts it reads and plans
  changes from them (a pure function); :mod:`~fleetkit.hostfacts.changes`
  holds the nouns (Change, waits, StepPlan, StepResult).
- :mod:`~fleetkit.hostfacts.roles`: a host's plan (ordered steps) from its
  groups, with every file rendered before any host is contacted.
- :mod:`~fleetkit.hostfacts.executor`: the one executor: all facts in one
  probe, changes in few batches, check mode reports only; counts round trips.
- :mod:`~fleetkit.hostfacts.probe`: the shell scripts of a probe and a batch
  and how their answers come back.
- :mod:`~fleetkit.hostfacts.provisioning`: the fleet (control plane first,
  then compute hosts in parallel); :mod:`~fleetkit.hostfacts.recap`: the report.
"""
