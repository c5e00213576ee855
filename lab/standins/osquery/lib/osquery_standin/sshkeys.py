"""Private-key facts for ``user_ssh_keys``, the way osquery reports them (osquery.md §4, §6).

osquery hands each file in ``~/.ssh`` to OpenSSL: PEM keys OpenSSL can read
unencrypted give ``key_type`` rsa/ec/dsa with sizes; anything it cannot read
(OpenSSH-format keys, encrypted keys, Ed25519) gives ``''`` and -1. The
``encrypted`` flag is reliable for both formats: PEM headers
(``Proc-Type: 4,ENCRYPTED``, ``ENCRYPTED PRIVATE KEY``) and, for OpenSSH
keys, the cipher name inside the binary blob (``none`` = not encrypted).
A tiny DER reader replaces OpenSSL here (stdlib only).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

_PEM_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_OID_RSA = "1.2.840.113549.1.1.1"
_OID_EC = "1.2.840.10045.2.1"
_OID_DSA = "1.2.840.10040.4.1"
_CURVES = {
    "1.2.840.10045.3.1.7": ("prime256v1", 256),
    "1.3.132.0.34": ("secp384r1", 384),
    "1.3.132.0.35": ("secp521r1", 521),
    "1.3.132.0.10": ("secp256k1", 256),
}


@dataclass(frozen=True)
class KeyFacts:
    encrypted: int
    key_type: str = ""
    key_group_name: str = ""
    key_length: int = -1
    key_security_bits: int = -1


UNREADABLE = KeyFacts(encrypted=0)


def inspect_private_key(data: bytes) -> KeyFacts | None:
    """Facts about a private key file, or None when the file holds no private key."""
    text = data.decode("ascii", errors="replace")
    match = _PEM_RE.search(text)
    if match is None:
        return None
    label, body = match.group(1), match.group(2)
    if label == "OPENSSH PRIVATE KEY":
        return KeyFacts(encrypted=_openssh_encrypted(body))
    if label == "ENCRYPTED PRIVATE KEY":
        return KeyFacts(encrypted=1)
    if label not in ("RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY", "PRIVATE KEY"):
        return None
    headers, _, payload = body.partition("\n\n") if "Proc-Type:" in body else ("", "", body)
    if "ENCRYPTED" in headers:
        return KeyFacts(encrypted=1)
    try:
        der = base64.b64decode("".join(payload.split()), validate=False)
        return _facts_from_der(label, der)
    except (ValueError, IndexError):
        return UNREADABLE


def _openssh_encrypted(body: str) -> int:
    try:
        blob = base64.b64decode("".join(body.split()))
    except ValueError:
        return 0
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic):
        return 0
    offset = len(magic)
    length = int.from_bytes(blob[offset : offset + 4], "big")
    cipher = blob[offset + 4 : offset + 4 + length]
    return 0 if cipher == b"none" else 1


def _facts_from_der(label: str, der: bytes) -> KeyFacts:
    top = _children(_tlv(der, 0)[1])
    if label == "RSA PRIVATE KEY":
        return _rsa(top)
    if label == "DSA PRIVATE KEY":
        return _dsa(_int_bits(top[1][1]))
    if label == "EC PRIVATE KEY":
        return _ec(_sec1_curve(top))
    # PKCS#8: SEQUENCE { version, AlgorithmIdentifier { oid, params }, OCTET STRING key }
    algorithm = _children(top[1][1])
    oid = _oid(algorithm[0][1])
    inner = _children(_tlv(top[2][1], 0)[1])
    if oid == _OID_RSA:
        return _rsa(inner)
    if oid == _OID_EC:
        return _ec(_oid(algorithm[1][1]) if len(algorithm) > 1 else "")
    if oid == _OID_DSA:
        return _dsa(_int_bits(_children(algorithm[1][1])[0][1]))
    return UNREADABLE  # Ed25519/Ed448: OpenSSL reads them but osquery reports ''


def _rsa(fields: list[tuple[int, bytes]]) -> KeyFacts:
    bits = _int_bits(fields[1][1])
    return KeyFacts(0, "rsa", "", bits, _rsa_security_bits(bits))


def _dsa(bits: int) -> KeyFacts:
    return KeyFacts(0, "dsa", "", bits, 80 if bits <= 1024 else 112 if bits <= 2048 else 128)


def _ec(curve_oid: str) -> KeyFacts:
    name, bits = _CURVES.get(curve_oid, ("", -1))
    return KeyFacts(0, "ec", name, bits, bits // 2 if bits > 0 else -1)


def _sec1_curve(fields: list[tuple[int, bytes]]) -> str:
    for tag, value in fields:
        if tag == 0xA0:  # [0] parameters: the named curve
            return _oid(_tlv(value, 0)[1])
    return ""


def _rsa_security_bits(bits: int) -> int:
    # OpenSSL's table (BN_security_bits) for the common sizes.
    for limit, security in ((15360, 256), (7680, 192), (3072, 128), (2048, 112), (1024, 80)):
        if bits >= limit:
            return security
    return 0


def _tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(tag, value, next offset) of the DER element at ``offset``."""
    tag = data[offset]
    length = data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    value = data[offset : offset + length]
    if len(value) != length:
        raise ValueError("truncated DER")
    return tag, value, offset + length


def _children(data: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        tag, value, offset = _tlv(data, offset)
        out.append((tag, value))
    return out


def _int_bits(value: bytes) -> int:
    return int.from_bytes(value, "big").bit_length()


def _oid(value: bytes) -> str:
    if not value:
        return ""
    parts = [value[0] // 40, value[0] % 40]
    current = 0
    for byte in value[1:]:
        current = (current << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(current)
            current = 0
    return ".".join(str(p) for p in parts)
