"""SSH trust as OpenSSH defines it: known_hosts lines, markers, and onboarding's refusals.

Each rule has its hostile case: a revoked key that is also pinned, a key
of another type offered where one is pinned, a certificate authority that
would vouch for a host, a replacement that would rewrite someone's
wildcard line. Connections against a real sshd are in
``tests/e2e/test_ssh_trust.py``.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

import fleetkit.commands.onboard as onboard
from fleetkit.clients.ssh import (
    HostKeyError,
    KeyProblem,
    KnownHosts,
    OfferedKey,
    fingerprint,
    host_matches,
    refusal,
)
from fleetkit.foundation.environment import Environment
from fleetkit.foundation.inventory import Host
from fleetkit.foundation.status import ExitStatus, UsageError
from fleetkit.runtime import Runtime

NAME = "[10.0.0.9]:2201"


def _public(private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> paramiko.PKey:
    line = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    kind, blob = line.decode().split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))


def ed() -> paramiko.PKey:
    return _public(ed25519.Ed25519PrivateKey.generate())


def ecdsa() -> paramiko.PKey:
    return _public(ec.generate_private_key(ec.SECP256R1()))


def entry(names: str, key: paramiko.PKey, marker: str = "") -> str:
    return f"{marker} {names} {key.get_name()} {key.get_base64()}".strip()


def known(tmp_path: Path, *lines: str) -> KnownHosts:
    path = tmp_path / "known_hosts"
    path.write_text("".join(line + "\n" for line in lines))
    return KnownHosts(str(path))


# ---------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("patterns", "name", "expected"),
    [
        (("10.0.0.9",), "10.0.0.9", True),
        (("10.0.0.9",), NAME, False),  # another port is another name
        ((NAME,), NAME, True),
        (("*.example.org",), "web-1.example.org", True),
        (("*.example.org",), "example.org", False),
        (("web-?.example.org",), "WEB-1.Example.org", True),  # host names ignore case
        (("*.example.org", "!db-*.example.org"), "db-1.example.org", False),
        (("!db-1", "*"), "db-1", False),  # a negation wins wherever it stands
        (("[10.0.0.*]:2201",), NAME, True),  # brackets are literal, not a class
        (("[10.0.0.*]:2201",), "[10.0.0.9]:2202", False),
    ],
)
def test_host_patterns_follow_openssh(patterns: tuple[str, ...], name: str, expected: bool) -> None:
    assert host_matches(patterns, name) is expected


def test_hashed_names_match_only_their_host(tmp_path: Path) -> None:
    key = ed()
    hashed = paramiko.HostKeys.hash_host(NAME)
    store = known(tmp_path, entry(hashed, key))
    assert store.check(NAME, key).problem is None
    assert store.check("[10.0.0.9]:2202", key).problem is KeyProblem.NOT_PINNED


# ---------------------------------------------------------------- verdicts


def test_pinned_changed_other_type_and_unknown(tmp_path: Path) -> None:
    pinned = ed()
    store = known(tmp_path, entry(NAME, pinned))
    assert store.check(NAME, pinned).problem is None
    assert store.check(NAME, ed()).problem is KeyProblem.CHANGED
    assert store.check(NAME, ecdsa()).problem is KeyProblem.OTHER_TYPE
    assert store.check("[10.0.0.8]:2201", pinned).problem is KeyProblem.NOT_PINNED


def test_a_revoked_key_is_refused_even_where_it_is_pinned(tmp_path: Path) -> None:
    stolen = ed()
    store = known(tmp_path, entry(NAME, stolen), entry("*", stolen, "@revoked"))
    check = store.check(NAME, stolen)
    assert check.problem is KeyProblem.REVOKED
    assert check.revoked_by is not None and check.revoked_by.number == 2
    assert store.trusted(NAME) == {}  # never handed to Paramiko as a pinned key
    assert store.lookup("10.0.0.9", 2201) == {}
    error = refusal(Host("web-1", "10.0.0.9", 2201), store, NAME, stolen, NAME)
    assert error.problem is KeyProblem.REVOKED
    assert f"REVOKED host key offered by {NAME}" in str(error)
    assert f"marked @revoked by line 2 of {store.path}" in str(error)


def test_revocation_is_scoped_by_its_host_patterns(tmp_path: Path) -> None:
    key = ed()
    store = known(tmp_path, entry(NAME, key), entry("*.example.org", key, "@revoked"))
    assert store.check(NAME, key).problem is None
    assert store.check("web-1.example.org", key).problem is KeyProblem.REVOKED


def test_cert_authority_lines_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    ca, host_key = ed(), ed()
    store = known(tmp_path, "# our CA", entry("*", ca, "@cert-authority"))
    [warning] = store.warnings
    assert f"{store.path}:2: @cert-authority lines are not supported" in warning
    assert "does not check host certificates" in warning
    check = store.check(NAME, host_key)
    assert check.problem is KeyProblem.NOT_PINNED and len(check.authorities) == 1
    assert check.pinned == {}  # the CA key itself is never trusted as a host key
    assert store.check(NAME, ca).problem is KeyProblem.NOT_PINNED
    error = refusal(Host("web-1", "10.0.0.9", 2201), store, NAME, host_key, NAME)
    assert "is not pinned" in str(error)
    assert "Line 2 is a @cert-authority line for it, but fleetkit does not accept host" in str(
        error
    )


def test_bad_lines_are_skipped_with_their_line_number(tmp_path: Path) -> None:
    key = ed()
    store = known(
        tmp_path,
        "@trusted * ssh-ed25519 AAAA",
        "host-only-one-field",
        f"{NAME} ssh-ed25519 !!notbase64!!",
        entry(NAME, key),
    )
    assert store.check(NAME, key).problem is None
    assert [w.split(": ", 1)[0] for w in store.warnings] == [
        f"{store.path}:1",
        f"{store.path}:2",
        f"{store.path}:3",
    ]
    assert "unknown marker @trusted" in store.warnings[0]


# ---------------------------------------------------------------- changes


def test_pin_refuses_revoked_and_other_type_keys_and_writes_nothing(tmp_path: Path) -> None:
    pinned, stolen = ecdsa(), ed()
    store = known(tmp_path, entry(NAME, pinned), entry("*", stolen, "@revoked"))
    before = Path(store.path).read_bytes()
    with pytest.raises(HostKeyError) as other:
        store.pin("10.0.0.9", 2201, ed())
    assert other.value.problem is KeyProblem.OTHER_TYPE
    with pytest.raises(HostKeyError) as revoked:
        store.pin("10.0.0.8", 22, stolen)
    assert revoked.value.problem is KeyProblem.REVOKED
    assert Path(store.path).read_bytes() == before


def test_replace_rewrites_only_that_hosts_lines(tmp_path: Path) -> None:
    old_ecdsa, old_ed, neighbour, new = ecdsa(), ed(), ed(), ed()
    store = known(
        tmp_path,
        "# pinned by hand, keep me",
        entry(NAME, old_ecdsa),
        entry("[10.0.0.8]:2201", neighbour),
        entry(NAME, old_ed),
        entry("*", ecdsa(), "@revoked"),
    )
    removed = store.replace("10.0.0.9", 2201, new)
    assert [line.key.get_name() for line in removed] == ["ecdsa-sha2-nistp256", "ssh-ed25519"]
    lines = Path(store.path).read_text().splitlines()
    assert lines[0] == "# pinned by hand, keep me"
    assert lines[1] == entry("[10.0.0.8]:2201", neighbour)
    assert lines[2].startswith("@revoked * ecdsa-sha2-nistp256 ")
    assert lines[3] == entry(NAME, new)
    assert store.trusted(NAME) == {"ssh-ed25519": new}


def test_replace_refuses_a_key_pinned_by_a_shared_line(tmp_path: Path) -> None:
    shared = ecdsa()
    store = known(tmp_path, entry(f"{NAME},[10.0.0.8]:2201", shared))
    before = Path(store.path).read_bytes()
    with pytest.raises(HostKeyError, match=r"pinned by line 1 of .*, which covers other hosts too"):
        store.replace("10.0.0.9", 2201, ed())
    assert Path(store.path).read_bytes() == before


# ---------------------------------------------------------------- onboarding


def workdir(tmp_path: Path, *known_lines: str) -> Runtime:
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "known_hosts").write_text("".join(f"{x}\n" for x in known_lines))
    (tmp_path / "inventory" / "fleet.yaml").write_text(
        json.dumps({"control_plane": {"hosts": {"orch-1": {"address": "10.0.0.1"}}}})
    )
    package = {"source": "pkg.deb", "sha256": "0" * 64}
    settings = {
        "osquery": {"package": package},
        "bacalhau": {"package": package, "node_token": {"env": "TOKEN"}},
    }
    (tmp_path / "fleetkit.yaml").write_text(json.dumps(settings))
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), environ={}, cwd=str(tmp_path))
    return Runtime(env=env)


def request(fp: str | None, *, replace: bool = False) -> onboard.OnboardRequest:
    return onboard.OnboardRequest(
        name="web-1",
        address="web-1.lan",
        port=2201,
        user="root",
        labels={},
        fingerprint=fp,
        replace_key=replace,
    )


def offered(key: paramiko.PKey) -> OfferedKey:
    """The key as fetched through ssh_config: web-1.lan really is 10.0.0.9:2201."""
    return OfferedKey(key, "10.0.0.9", 2201, rewritten=True)


def known_text(rt: Runtime) -> str:
    return Path(rt.settings.ssh.known_hosts).read_text()


def refuse(rt: Runtime, req: onboard.OnboardRequest, key: paramiko.PKey) -> UsageError:
    before = known_text(rt)
    with pytest.raises(UsageError) as caught:
        onboard.confirm_key(rt, req, offered(key))
        onboard.pin_key(rt, req, offered(key))
    assert caught.value.exit_status == ExitStatus.BAD_INPUT
    assert known_text(rt) == before
    return caught.value


def test_the_key_is_checked_under_the_address_really_reached(tmp_path: Path) -> None:
    key = ed()
    rt = workdir(tmp_path)
    onboard.confirm_key(rt, request(fingerprint(key)), offered(key))
    onboard.pin_key(rt, request(fingerprint(key)), offered(key))
    assert known_text(rt) == entry(NAME, key) + "\n"
    said = rt.env.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"web-1 ({NAME}) offers host key ssh-ed25519 {fingerprint(key)}" in said


def test_a_revoked_key_is_never_pinned_even_with_replace(tmp_path: Path) -> None:
    stolen = ed()
    rt = workdir(tmp_path, entry("*", stolen, "@revoked"))
    for replace in (False, True):
        error = refuse(rt, request(fingerprint(stolen), replace=replace), stolen)
        assert "marks @revoked" in str(error) and "never pins a revoked key" in str(error)


def test_another_key_type_pinned_is_refused_unless_replaced(tmp_path: Path) -> None:
    old, new = ecdsa(), ed()
    rt = workdir(tmp_path, entry(NAME, old))
    error = refuse(rt, request(fingerprint(new)), new)
    assert "offers a key of another type (ssh-ed25519" in str(error)
    assert f"ecdsa-sha2-nistp256 {fingerprint(old)}" in str(error)
    assert "re-run with --replace-key" in str(error) and "Nothing was written" in str(error)

    # Replacing still needs the new key confirmed.
    wrong = refuse(rt, request("SHA256:" + "A" * 43, replace=True), new)
    assert "host key mismatch" in str(wrong)
    unconfirmed = refuse(rt, request(None, replace=True), new)
    assert "not confirmed" in str(unconfirmed)

    req = request(fingerprint(new), replace=True)
    onboard.confirm_key(rt, req, offered(new))
    onboard.pin_key(rt, req, offered(new))
    assert known_text(rt) == entry(NAME, new) + "\n"
    said = rt.env.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"replaced ecdsa-sha2-nistp256 {fingerprint(old)} with ssh-ed25519" in said


def test_a_changed_key_of_the_same_type_is_refused_unless_replaced(tmp_path: Path) -> None:
    old, new = ed(), ed()
    rt = workdir(tmp_path, entry(NAME, old))
    error = refuse(rt, request(fingerprint(new)), new)
    assert f"but ssh-ed25519 {fingerprint(old)} is pinned for it" in str(error)
    req = request(fingerprint(new), replace=True)
    onboard.confirm_key(rt, req, offered(new))
    onboard.pin_key(rt, req, offered(new))
    assert known_text(rt) == entry(NAME, new) + "\n"


def test_replace_never_rewrites_a_shared_line(tmp_path: Path) -> None:
    old, new = ecdsa(), ed()
    rt = workdir(tmp_path, entry(f"{NAME},[10.0.0.8]:2201", old))
    error = refuse(rt, request(fingerprint(new), replace=True), new)
    assert "covers other hosts too" in str(error) and "Nothing was written" in str(error)
