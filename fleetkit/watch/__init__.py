"""The watch: packs run on their intervals, notifications on change only.

- :mod:`.settings`    the ``watch:`` section of fleetkit.yaml, read strictly.
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

The watch sits above the ask engine and the history: it never asks the fleet
or records anything itself; the command's glue does, through callbacks.
"""
