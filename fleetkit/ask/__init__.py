"""The fleet-asking engine: a typed scope, transports, and one immutable answer.

How a question travels (each step one module)::

    scope.py        Question (SQL checked once: empty, NUL, denied tables) and
                    Scope (selector, inventory hosts, transport, timeout,
                    strangers) parsed once from the command's options
    engine.py       Engine.ask(question, scope) -> FleetAnswer
    transport.py    the Transport protocol; NodeReply / Collected (raw, untrusted)
    via_ssh.py      osqueryi over SSH on inventory hosts
    via_bacalhau.py one ops job: expected nodes, submit, collect (RunOutput or S3)
    poll.py         the adaptive poller that waits for the job
    osqueryi.py     osqueryi's contract: how it is called, what it prints
    validate.py     every reply checked before anyone reads a row
    answer.py       NodeResult / FleetAnswer (frozen) -- the interface consumers use
    rows.py         a node's validated rows and the tag rule (nodeID, hostname, ...)
    merge.py        json / ndjson / csv / table writers of an answer
    verdicts.py     policy evaluation (PASS / FAIL / UNKNOWN / ERROR)
    hunts.py        indicator hunts: SQL batches and hits

A new transport implements ``Transport.ask`` and is picked in ``Engine.transport``;
a new consumer of answers (history, scheduled packs, report) reads
:class:`~fleetkit.ask.answer.FleetAnswer` as documented in ``answer.py``.
"""
