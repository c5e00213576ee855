"""The watch: packs run on their intervals, notifications on change only.

The parts that know nothing of the fleet:

- :mod:`.scheduler`   runs each pack on its interval (or each once), keeps its
                      time when runs are slow, stops cleanly on SIGTERM/Ctrl-C.
- :mod:`.events`      what a notification says, with a stable id.
- :mod:`.transitions` pure functions: a run's state (from the history) -> events.
- :mod:`.session`     which runs still need notifying (from run ids, so a
                      restarted watch re-sends nothing), and publishing them.
- :mod:`.notify`      sinks: a log line, a signed webhook with retries in the
                      background behind a bounded queue.
- :mod:`.state`       the status file's model and writer, verify's judgement of it.
- :mod:`.statusread`  the status file's strict reader (verify reads it as hostile input).

The glue between them, the ask engine and the history:

- :mod:`.packset`     which packs run (``watch.packs``, ``--pack``), validated
                      before anything starts; each pack's scope (its platforms).
- :mod:`.packrecord`  a pack run in the history: one run, rows tagged with
                      their statement, verdicts.
- :mod:`.historyview` the history as the notifications read it (transitions,
                      hunt hits against a node's last real answer, missing streaks).
- :mod:`.service`     one watch process: each run asks the fleet as ONE job
                      per node (:mod:`fleetkit.ask.packrun`), records, notifies.

The settings live in :mod:`fleetkit.foundation.watch_settings` (read with the
rest of fleetkit.yaml); ``invoke watch`` is :mod:`fleetkit.commands.watch`;
provisioning installs the watch as a service on the control plane
(:mod:`fleetkit.hostfacts.roles.watch`) and verify checks it
(:mod:`fleetkit.readiness.watch_check`).
"""
