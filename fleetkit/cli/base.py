"""What every fleetkit task shares: the error mapping, the runtime, the flags.

Each task parses its options, hands them to one core function that returns
an :class:`ExitStatus`, and exits with it. :func:`run_command` is the one
place where errors become messages and exit codes (httpie's ``core``).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task, task

from fleetkit.foundation.environment import Environment
from fleetkit.foundation.output import CLOSED_EARLY, silence_stdout
from fleetkit.foundation.secrets import redact
from fleetkit.foundation.status import ExitStatus, FleetkitError, exit_status_for
from fleetkit.foundation.terminal import terminal_safe
from fleetkit.runtime import Runtime


def run_command(work: Callable[[Runtime], ExitStatus], runtime: Runtime) -> ExitStatus:
    """Run a core function; map every error to a message and an exit status."""
    env = runtime.env
    try:
        return ExitStatus(work(runtime))
    except KeyboardInterrupt:
        env.end_progress()
        env.say("fleetkit: interrupted")
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        # A write to stdout that no command wrapped in output.deliver (which
        # reports a closed pipe and carries on): same message, and the run
        # could not finish its output, so exit 1 (see foundation/output.py).
        silence_stdout(env)
        env.end_progress()
        env.say(f"fleetkit: {CLOSED_EARLY}")
        return ExitStatus.FAILURE
    except FleetkitError as exc:
        # Messages quote hosts, the orchestrator and files: escaped, one line each.
        env.end_progress()
        env.say(f"fleetkit: error: {terminal_safe(redact(str(exc)))}")
        return exc.exit_status
    except Exception as exc:  # a bug: say so plainly, trace only on request
        env.end_progress()
        message = terminal_safe(redact(f"{type(exc).__name__}: {exc}"))
        env.say(f"fleetkit: internal error: {message}")
        if env.environ.get("FLEETKIT_DEBUG"):
            env.say(terminal_safe(redact(traceback.format_exc()), keep_newlines=True))
        else:
            env.say("fleetkit: set FLEETKIT_DEBUG=1 for the traceback")
        return exit_status_for(exc)


#: Key of an Invoke config value holding a ready :class:`Runtime`; tests put one
#: there to run a task in-process with their own streams and environment.
RUNTIME_CONFIG_KEY = "fleetkit_runtime"


def finish(c: Context, work: Callable[[Runtime], ExitStatus], settings: str) -> None:
    """Run ``work`` in the injected runtime (tests) or a fresh one; exit with its status."""
    injected = c.config.get(RUNTIME_CONFIG_KEY)
    if isinstance(injected, Runtime):
        runtime = injected
        runtime.settings_path = settings or runtime.settings_path
    else:
        runtime = Runtime(env=Environment(), settings_path=settings or None)
    status = run_command(work, runtime)
    if status != ExitStatus.SUCCESS:
        raise Exit(code=int(status))


SETTINGS_HELP = "settings file (default: $FLEETKIT_SETTINGS or ./fleetkit.yaml)"
NO_HISTORY_HELP = "do not record this run in the history (settings history.path)"
MIN_COVERAGE_HELP = "exit 1 when fewer than PCT percent of the asked nodes answered"

#: Every task and its option help by the body's name (``packs_import`` for the
#: task people type ``packs.import``), kept aside because Invoke consumes
#: ``Task.help`` while it builds its parser.
_TASKS: dict[str, tuple[Task[Any], dict[str, str]]] = {}


def command(
    *,
    iterable: list[str] | None = None,
    positional: list[str] | None = None,
    **option_help: str,
) -> Callable[[Callable[..., None]], Any]:
    """``@task`` as every fleetkit command wants it: stable flags (no automatic
    short flags), help for each option, and the common ``--settings``."""
    help_by_option = {**option_help, "settings": SETTINGS_HELP}
    make_task = task(
        auto_shortflags=False,
        iterable=iterable or [],
        positional=positional,
        help=help_by_option,
    )

    def register(body: Callable[..., None]) -> Any:
        made = make_task(body)
        _TASKS[body.__name__] = (made, dict(help_by_option))
        return made

    return register


_HELP_FLAGS = ("-h", "--help")


def wants_help(name: str, *positional: str) -> bool:
    """True (after printing the task's help) when ``--help`` landed in a positional.

    Invoke hands the token after ``query`` to its positional SQL argument even
    when it is ``--help``; a person asking for help must get help, not a query
    named "--help". ``name`` is the task as typed (``query``, ``packs.import``).
    """
    if not any(value in _HELP_FLAGS for value in positional):
        return False
    task_obj, option_help = _TASKS[name.replace(".", "_")]
    lines = [f"Usage: fleetkit {name} [--options]", "", f"  {(task_obj.__doc__ or '').strip()}", ""]
    for argument in task_obj.get_arguments():
        option = argument.name or ""
        flag = "--" + option.replace("_", "-")
        lines.append(f"  {flag:<26} {option_help.get(option, '')}")
    print("\n".join(lines))
    return True
