"""The project's pinned host keys, read the way OpenSSH reads a known_hosts file.

Format (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT"): ``[marker] patterns keytype
base64 [comment]``. ``patterns`` is a comma-separated list of host names
(``[addr]:port`` for a port other than 22), ``*``/``?`` wildcards, ``!``
negations, or one hashed name (``|1|salt|hash``).

What fleetkit does with each kind of line:

- a plain line pins its key for every host it matches;
- ``@revoked``: that key is refused for every host the line matches, even
  where another line pins it (a stolen key must not keep working);
- ``@cert-authority``: **not supported**. fleetkit pins each host's own key
  and does not check host certificates (Paramiko cannot verify them). The
  line is kept in the file, reported as a warning when the file is read, and
  named in the refusal of a host it would have vouched for, so nobody
  believes a CA protects a connection that fleetkit refused.

Unreadable lines are skipped with a warning naming the file and line (one
typo must not lose every pin; skipping only ever refuses more).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import paramiko

from fleetkit.clients.ssh.errors import HostKeyError, KeyProblem
from fleetkit.foundation.atomic import atomic_write
from fleetkit.foundation.status import ConfigError
from fleetkit.foundation.table import cell

REVOKED = "@revoked"
CERT_AUTHORITY = "@cert-authority"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` form (base64, no padding)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def describe(key: paramiko.PKey) -> str:
    """``ssh-ed25519 SHA256:...``: how a key is shown to a person."""
    return f"{key.get_name()} {fingerprint(key)}"


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def host_matches(patterns: tuple[str, ...], name: str) -> bool:
    """OpenSSH's rule: some pattern matches and no negated (``!``) pattern does."""
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _pattern_matches(pattern[1:] if negated else pattern, name):
            if negated:
                return False
            matched = True
    return matched


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        try:
            expected = paramiko.HostKeys.hash_host(name, pattern)
        except (binascii.Error, ValueError, AssertionError):
            return False
        return hmac.compare_digest(expected, pattern)
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == name.lower()
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.IGNORECASE | re.DOTALL) is not None


@dataclass(frozen=True)
class KnownHostLine:
    number: int
    #: "" for a plain line, else ``@revoked`` or ``@cert-authority``.
    marker: str
    patterns: tuple[str, ...]
    key: paramiko.PKey

    def matches(self, name: str) -> bool:
        return host_matches(self.patterns, name)

    @property
    def single_host(self) -> str | None:
        """The one literal name (or hash) this line pins, None for patterns and lists."""
        if len(self.patterns) != 1 or any(c in self.patterns[0] for c in "*?!"):
            return None
        return self.patterns[0]


@dataclass(frozen=True)
class KeyCheck:
    """What the file says about one key offered by one host name."""

    #: None: the key is pinned for that name and not revoked.
    problem: KeyProblem | None
    #: Keys pinned for the name (revoked ones left out), by type.
    pinned: dict[str, paramiko.PKey]
    #: The ``@revoked`` line that names the key (problem REVOKED).
    revoked_by: KnownHostLine | None = None
    #: ``@cert-authority`` lines matching the name (never trusted, see the module docstring).
    authorities: tuple[KnownHostLine, ...] = ()


class KnownHosts:
    """The project's pinned host keys (OpenSSH known_hosts format)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.warnings: list[str] = []
        self.lines: list[KnownHostLine] = []
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        try:
            text = Path(self.path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"cannot read known_hosts: {reason}", file=self.path) from None
        for number, raw in enumerate(text.splitlines(), 1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            line = self._parse(number, stripped)
            if line is None:
                continue
            if line.marker == CERT_AUTHORITY:
                self.warnings.append(
                    f"{self.path}:{number}: @cert-authority lines are not supported (fleetkit "
                    "pins each host's own key and does not check host certificates); hosts "
                    "trusted only through this CA will be refused"
                )
            self.lines.append(line)

    def _parse(self, number: int, text: str) -> KnownHostLine | None:
        fields = text.split()
        marker = fields.pop(0) if fields[0].startswith("@") else ""
        where = f"{self.path}:{number}"
        if marker not in ("", REVOKED, CERT_AUTHORITY):
            self.warnings.append(f"{where}: skipped line with unknown marker {cell(marker)}")
            return None
        if len(fields) < 3:
            self.warnings.append(f"{where}: skipped unreadable line (not enough fields)")
            return None
        patterns, key_type, blob = fields[0], fields[1], fields[2]
        try:
            key = paramiko.PKey.from_type_string(key_type, base64.b64decode(blob, validate=True))
        except (paramiko.SSHException, binascii.Error, ValueError, TypeError) as exc:
            reason = cell(f"{type(exc).__name__}: {exc}", max_width=120)
            self.warnings.append(f"{where}: skipped unreadable line ({reason})")
            return None
        return KnownHostLine(number, marker, tuple(p for p in patterns.split(",") if p), key)

    # ---- questions

    def check(self, name: str, key: paramiko.PKey) -> KeyCheck:
        """Is ``key``, offered by the host known as ``name``, to be trusted? And if not, why."""
        revoked_by = self.revocation(name, key)
        pinned = self.trusted(name)
        authorities = tuple(
            line for line in self.lines if line.marker == CERT_AUTHORITY and line.matches(name)
        )
        same_type = pinned.get(key.get_name())
        if revoked_by is not None:
            problem: KeyProblem | None = KeyProblem.REVOKED
        elif same_type is not None and same_type.asbytes() == key.asbytes():
            problem = None
        elif same_type is not None:
            problem = KeyProblem.CHANGED
        elif pinned:
            problem = KeyProblem.OTHER_TYPE
        else:
            problem = KeyProblem.NOT_PINNED
        return KeyCheck(problem, pinned, revoked_by, authorities)

    def trusted(self, name: str) -> dict[str, paramiko.PKey]:
        """Keys pinned for ``name`` by plain lines, revoked ones left out, by type."""
        found: dict[str, paramiko.PKey] = {}
        for line in self.lines:
            if line.marker or not line.matches(name) or self.revocation(name, line.key):
                continue
            found.setdefault(line.key.get_name(), line.key)
        return found

    def revocation(self, name: str, key: paramiko.PKey) -> KnownHostLine | None:
        """The ``@revoked`` line that refuses ``key`` for ``name``, if any."""
        blob = key.asbytes()
        for line in self.lines:
            if line.marker == REVOKED and line.key.asbytes() == blob and line.matches(name):
                return line
        return None

    def lookup(self, address: str, port: int) -> dict[str, paramiko.PKey]:
        """Trusted keys for ``address:port`` (see :meth:`trusted`)."""
        return self.trusted(known_hosts_name(address, port))

    # ---- changes (atomic rewrite under a lock)

    def pin(self, address: str, port: int, key: paramiko.PKey) -> bool:
        """Add a key; False when it was already pinned.

        Refuses (:class:`HostKeyError`, nothing written) a revoked key and a
        key for a host that already has another one pinned: replacing one is
        :meth:`replace`, an explicit act.
        """
        name = known_hosts_name(address, port)
        with self._lock:
            check = self.check(name, key)
            if check.problem is None:
                return False
            if check.problem is not KeyProblem.NOT_PINNED:
                raise HostKeyError(
                    name, f"{describe(key)} not pinned: {self._why(check)}", problem=check.problem
                )
            self._rewrite(drop=(), add=f"{name} {key.get_name()} {key.get_base64()}")
            return True

    def replace(self, address: str, port: int, key: paramiko.PKey) -> list[KnownHostLine]:
        """Pin ``key`` as the host's only key; the lines removed (empty: nothing to replace).

        Only lines that pin this one host are removed. A key pinned through a
        pattern or a list of hosts is refused (that line is someone's edit,
        covering other hosts too), and so is a revoked key.
        """
        name = known_hosts_name(address, port)
        with self._lock:
            check = self.check(name, key)
            if check.problem is KeyProblem.REVOKED:
                raise HostKeyError(name, self._why(check), problem=check.problem)
            pinning = [
                line
                for line in self.lines
                if not line.marker and line.matches(name) and line.key.asbytes() != key.asbytes()
            ]
            shared = [line for line in pinning if line.single_host is None]
            if shared:
                numbers = ", ".join(str(line.number) for line in shared)
                raise HostKeyError(
                    name,
                    f"its key is pinned by line {numbers} of {self.path}, which covers other "
                    "hosts too (patterns or a list); edit that line by hand",
                    problem=check.problem or KeyProblem.CHANGED,
                )
            if check.problem is None and not pinning:
                return []
            line = f"{name} {key.get_name()} {key.get_base64()}" if check.problem else None
            self._rewrite(drop={line.number for line in pinning}, add=line)
            return pinning

    def _why(self, check: KeyCheck) -> str:
        if check.revoked_by is not None:
            return f"it is revoked by line {check.revoked_by.number} of {self.path} (@revoked)"
        pinned = ", ".join(describe(k) for k in check.pinned.values())
        return f"{pinned} is pinned for this host in {self.path}"

    def _rewrite(self, *, drop: set[int] | tuple[()], add: str | None) -> None:
        """Drop lines by number, append one; every other byte of the file is kept."""
        target = Path(self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        old = target.read_text(encoding="utf-8") if target.exists() else ""
        kept = [line for n, line in enumerate(old.splitlines(keepends=True), 1) if n not in drop]
        text = "".join(kept)
        if text and not text.endswith("\n"):
            text += "\n"
        if add is not None:
            text += add + "\n"
        atomic_write(target, text.encode(), mode=0o644)
        self.lines.clear()
        self.warnings.clear()
        self._load()
