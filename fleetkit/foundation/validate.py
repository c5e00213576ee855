"""What a valid name, label, address, path, version... is: whole-string patterns, one place.

Values from the inventory and the settings end up in ``config.yaml``,
``osquery.flags``, systemd units, nftables rulesets and shell commands on the
hosts. A pattern anchored with ``^...$`` and tested with ``re.match`` lets a
trailing newline through (``$`` matches before it): a config injection. So
every pattern here is compiled with ``\\A...\\Z`` (whole string, even through
``.match()``), ASCII-only classes (``[0-9]`` is not ``\\d``, which takes any
Unicode digit), and is tested with :func:`matches` (``fullmatch``).

Error messages show a bad value through :func:`excerpt`: bounded, control
characters escaped, so a megabyte of junk or an escape sequence in a file
never floods or drives the terminal.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlparse

from fleetkit.foundation.terminal import terminal_safe

#: Characters of a value shown in an error message, at most.
EXCERPT_LENGTH = 40


def whole(body: str) -> re.Pattern[str]:
    """A pattern that matches whole strings only, even through ``.match()``/``.search()``."""
    return re.compile(rf"\A(?:{body})\Z", re.ASCII)


def matches(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def excerpt(value: object, *, limit: int = EXCERPT_LENGTH, quoted: bool = True) -> str:
    """``value`` for an error message: at most ``limit`` characters, escaped, cut visibly."""
    text = value if isinstance(value, str) else repr(value)
    cut = len(text) > limit
    head = text[:limit]
    shown = repr(head) if quoted else terminal_safe(head)
    if cut:
        shown += f"... ({len(text)} characters)"
    return shown


NAME = whole(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
USER = whole(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
LABEL_KEY = whole(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62})?(?:/[A-Za-z0-9_.-]{1,63})?")
LABEL_VALUE = whole(r"[A-Za-z0-9_.-]{0,63}")
HOSTNAME = whole(
    r"(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
#: osquery table and column names (lowercase, as osquery declares them).
TABLE = whole(r"[a-z_][a-z0-9_]{0,63}")
SHA256 = whole(r"[0-9a-f]{64}")
#: An absolute path on a host: no whitespace, quotes, ``$``, ``%`` (systemd specifiers)...
HOST_PATH = whole(r"/[A-Za-z0-9_.+@=,:/-]{0,4095}")
OSQUERY_VERSION = whole(r"[0-9]{1,4}(?:\.[0-9]{1,6}){1,3}(?:[-+~][A-Za-z0-9.]{1,32})?")
BACALHAU_VERSION = whole(r"v[0-9]{1,4}(?:\.[0-9]{1,6}){2}(?:[-+][A-Za-z0-9.-]{1,32})?")
#: A container image reference: [registry[:port]/]name[/name...][:tag][@sha256:digest]
IMAGE = whole(
    r"(?=.{1,255}(?:@|\Z))[A-Za-z0-9][A-Za-z0-9._-]*(?::[0-9]{1,5})?"
    r"(?:/[a-z0-9][a-z0-9._-]*)*(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?"
    r"(?:@sha256:[0-9a-f]{64})?"
)
DEBIAN_PACKAGE = whole(r"[a-z0-9][a-z0-9+.-]{1,62}")
DURATION = whole(r"(?:[0-9]{1,9}(?:ms|s|m|h)){1,4}")
ENV_NAME = whole(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
S3_BUCKET = whole(r"[a-z0-9](?:[a-z0-9.-]{0,61}[a-z0-9])?")
S3_REGION = whole(r"[a-z0-9][a-z0-9-]{0,62}")
S3_KEY_TEMPLATE = whole(r"[A-Za-z0-9_./{}=-]{1,512}")
#: What a URL fleetkit passes on may hold: RFC 3986 minus quotes, ``$``, ``;``,
#: backtick, spaces, parentheses and ``!`` (shell-active), and no control characters.
_URL_CHARS = whole(r"[A-Za-z0-9._~:/?#\[\]@+,=%&-]{1,2048}")
#: A local file name derived from a package source, used on hosts.
FILE_NAME = whole(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,254}")


def valid_address(value: object) -> bool:
    """An IPv4/IPv6 address (IPv6 may carry a zone) or a DNS host name; no brackets."""
    if not isinstance(value, str) or not value:
        return False
    try:
        ipaddress.ip_address(value)
        return matches(whole(r"[0-9A-Fa-f.:]+(?:%[A-Za-z0-9_.-]{1,32})?"), value)
    except ValueError:
        return matches(HOSTNAME, value)


def valid_http_url(value: object) -> bool:
    """An http(s) URL with a host and only the characters of :data:`_URL_CHARS`."""
    if not matches(_URL_CHARS, value):
        return False
    assert isinstance(value, str)
    try:
        parsed = urlparse(value)
        _ = parsed.port  # raises on a bad port
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


def has_control_characters(value: str) -> bool:
    return terminal_safe(value) != value
