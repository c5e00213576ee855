"""The rollback protocol on one host: the shell it runs (as root) and the :class:`Isolator`.

See :mod:`fleetkit.commands.quarantine` for the steps and why.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fleetkit.clients.ssh import Remote
from fleetkit.commands.quarantine.release import LocalCopies, new_marker, release_report, sections
from fleetkit.commands.quarantine.ruleset import (
    APPLY_TIMEOUT,
    DEFAULT_ROLLBACK_SECONDS,
    STATE_DIR,
    TABLE,
)
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.status import FleetkitError, HostError
from fleetkit.foundation.validate import excerpt

# --------------------------------------------------------------------------- on the host
#
# Shell run on the host as root. Values reach the scripts only as the shell
# variables set by _script() (quoted), never spliced into the script text.

_NEED_NFT = (
    "command -v nft >/dev/null 2>&1 || { echo 'nft (nftables) is not installed' >&2; exit 3; }"
)

_PREPARE = f"""set -e
{_NEED_NFT}
mkdir -p "$D" && chmod 700 "$D"
rm -f "$D/rolled-back"
nft list ruleset > "$D/rollback.nft.tmp"
mv -f "$D/rollback.nft.tmp" "$D/rollback.nft"
# First quarantine (or the saved state was lost): remember what to --release to.
if ! nft list table inet "$T" >/dev/null 2>&1 || [ ! -f "$D/pre-quarantine.nft" ]; then
  cp "$D/rollback.nft" "$D/pre-quarantine.nft"
fi
{{ echo 'flush ruleset'; cat "$D/rollback.nft"; }} > "$D/restore.nft"
if ! nft -c -f "$D/restore.nft"; then
  echo 'the current ruleset cannot be reloaded from its own listing;' \
       'refusing to quarantine without a working rollback' >&2
  exit 4
fi
echo "--- $M pre-quarantine"
cat "$D/pre-quarantine.nft"
"""

_UPLOAD = """umask 077
cat > "$D/quarantine.nft.tmp"
mv -f "$D/quarantine.nft.tmp" "$D/quarantine.nft"
nft -c -f "$D/quarantine.nft"
"""

# The timer is its own session and process group (setsid), so closing this SSH
# session does not stop it and cancelling kills both the shell and its sleep.
_TIMER = """rm -f "$D/rollback.pid"
setsid sh -c 'echo $$ > "$1/rollback.pid"; sleep "$2"; nft -f "$1/restore.nft" \
  && date > "$1/rolled-back"; rm -f "$1/rollback.pid"' timer "$D" "$N" </dev/null >/dev/null 2>&1 &
i=0
while [ ! -s "$D/rollback.pid" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
cat "$D/rollback.pid"
"""

_CANCEL = """rolled_back() {
  if [ -f "$D/rolled-back" ]; then echo 'rollback already happened' >&2; exit 5; fi
}
rolled_back
kill -TERM -- "-$P" 2>/dev/null || kill -TERM "$P" 2>/dev/null || true
rm -f "$D/rollback.pid"
rolled_back
nft list table inet "$T" > "$D/applied.nft" || { echo 'quarantine table missing' >&2; exit 6; }
echo "--- $M applied"
cat "$D/applied.nft"
"""

# The table is listed and deleted in one nft transaction's worth of time; only
# fleetkit's table goes. Sections are marked with a per-run nonce ($M), so text
# a hostile host puts in its ruleset (comments) cannot fake a section.
_RELEASE = f"""{_NEED_NFT}
if [ -s "$D/rollback.pid" ]; then kill -TERM -- "-$(cat "$D/rollback.pid")" 2>/dev/null || true; fi
echo "--- $M table"
if nft list table inet "$T" 2>/dev/null; then
  nft delete table inet "$T"
else
  echo "--- $M no table"
fi
echo "--- $M now"
nft list ruleset
echo "--- $M before"
if [ -f "$D/pre-quarantine.nft" ]; then cat "$D/pre-quarantine.nft"; else echo "--- $M none"; fi
rm -f "$D/pre-quarantine.nft" "$D/applied.nft" "$D/rolled-back"
"""


def _script(body: str, **values: str | int) -> str:
    """Prefix a script with its variables, each shell-quoted."""
    header = "".join(f"{name}={shlex.quote(str(value))}\n" for name, value in values.items())
    return header + body


@dataclass(frozen=True)
class HostPaths:
    directory: str = STATE_DIR

    def prepare(self, marker: str) -> str:
        """Save the current ruleset and a checked restore file; the firewall is unchanged.

        Prints the pre-quarantine ruleset after ``--- MARKER pre-quarantine``.
        """
        return _script(_PREPARE, D=self.directory, T=TABLE, M=marker)

    def upload(self) -> str:
        """Store the ruleset from stdin and check it with ``nft -c``."""
        return _script(_UPLOAD, D=self.directory)

    def apply(self) -> str:
        return _script('nft -f "$D/quarantine.nft"\n', D=self.directory)

    def timer(self, seconds: float) -> str:
        """Start the detached rollback timer; prints its pid (= its process group)."""
        return _script(_TIMER, D=self.directory, N=max(1, round(seconds)))

    def kill_timer(self, pid: int) -> str:
        return _script('kill -TERM -- "-$P" 2>/dev/null || true\n', P=pid)

    def cancel(self, pid: int, marker: str) -> str:
        """Over the NEW connection: stop the timer; fail if it fired or the table is gone.

        Prints the table as applied after ``--- MARKER applied``.
        """
        return _script(_CANCEL, D=self.directory, T=TABLE, P=pid, M=marker)

    def release(self, marker: str) -> str:
        """Delete fleetkit's table; print it, the ruleset now and the saved pre-quarantine one."""
        return _script(_RELEASE, D=self.directory, T=TABLE, M=marker)


@dataclass
class HostOutcome:
    host: str
    ok: bool
    message: str
    warnings: list[str] = field(default_factory=list)


Connect = Callable[[Host], Remote]


@dataclass
class Isolator:
    """Runs the rollback protocol on one host (connections injected for tests)."""

    connect: Connect
    rollback_seconds: float = DEFAULT_ROLLBACK_SECONDS
    paths: HostPaths = field(default_factory=HostPaths)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    #: None = compare with the host's own saved copy only.
    copies: LocalCopies | None = None

    def quarantine(self, host: Host, ruleset: str) -> HostOutcome:
        first = self.connect(host)
        marker = new_marker()
        try:
            saved = first.run(self.paths.prepare(marker)).check("saving the current ruleset")
            pre = sections(saved.out, marker).get("pre-quarantine")
            if self.copies is not None and pre is not None:
                # the first quarantine's state is what --release compares with
                self.copies.write(host.name, "pre", pre, keep_existing=True)
            first.run(self.paths.upload(), stdin=ruleset).check(
                "checking the quarantine ruleset (nft -c)"
            )
            started = self.clock()
            pid_text = (
                first.run(self.paths.timer(self.rollback_seconds))
                .check("starting the rollback timer")
                .out.strip()
            )
            if not pid_text.isdigit():
                raise HostError(
                    host.name, f"rollback timer did not start (pid {excerpt(pid_text)})"
                )
            pid = int(pid_text)
            applied = self._apply(first)
            if applied is not None:
                # nft refused: nothing applied; stop the timer over the same connection.
                first.run(self.paths.kill_timer(pid))
                raise HostError(host.name, f"applying the ruleset failed: {applied}")
        finally:
            first.close()
        return self._confirm(host, pid, started, marker)

    def _apply(self, remote: Remote) -> str | None:
        """None when applied or when the answer was lost (the new connection decides)."""
        try:
            result = remote.run(self.paths.apply(), timeout=APPLY_TIMEOUT)
        except FleetkitError:
            return None
        if result.ok:
            return None
        shown = (result.err or result.out).strip()
        return excerpt(shown, limit=200, quoted=False) if shown else f"exit {result.exit_code}"

    def _confirm(self, host: Host, pid: int, started: float, marker: str) -> HostOutcome:
        deadline = started + self.rollback_seconds
        last_error = "no attempt"
        while self.clock() < deadline:
            try:
                second = self.connect(host)
            except FleetkitError as exc:
                last_error = str(exc)
                self.sleep(0.5)
                continue
            try:
                done = second.run(self.paths.cancel(pid, marker)).check(
                    "confirming over a new SSH connection"
                )
            finally:
                second.close()
            applied = sections(done.out, marker).get("applied")
            if self.copies is not None and applied is not None:
                self.copies.write(host.name, "applied", applied)
            return HostOutcome(
                host.name,
                True,
                "quarantined: ruleset applied, confirmed over a new SSH connection, "
                "rollback timer cancelled",
            )
        raise HostError(
            host.name,
            f"no new SSH connection within {self.rollback_seconds:g}s after applying the "
            f"quarantine ({last_error}); the host restores its previous ruleset by itself",
        )

    def release(self, host: Host) -> HostOutcome:
        remote = self.connect(host)
        marker = new_marker()
        try:
            out = remote.run(self.paths.release(marker)).check("removing the quarantine").out
        finally:
            remote.close()
        warnings = release_report(host.name, sections(out, marker), self.copies)
        if self.copies is not None:
            self.copies.forget(host.name)
        return HostOutcome(host.name, True, "released: quarantine table removed", warnings)
