"""API authentication: ``API.Auth.Users`` (API keys or username+password).

Active only when users are configured; otherwise every request is allowed
(the real default policy). ``alive``/``version``/``authconfig`` stay open.
Passwords are compared in plain text: this stand-in has no bcrypt.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hmac
from dataclasses import dataclass
from typing import Any

from .config import field_of
from .httpapi import ApiError, Request

_OPEN_PATHS = ("/api/v1/agent/alive", "/api/v1/agent/version", "/api/v1/agent/authconfig")
_OPEN_PREFIXES = ("/api/v1/auth", "/api/v1/version")


@dataclass(frozen=True)
class User:
    alias: str
    api_key: str
    username: str
    password: str
    actions: tuple[str, ...]

    def may(self, action: str) -> bool:
        return any(fnmatch.fnmatchcase(action, allowed) for allowed in self.actions)


def users_from_config(raw: Any) -> list[User]:
    users = []
    for item in raw or []:
        actions: list[str] = []
        for capability in field_of(item, "Capabilities", []) or []:
            actions.extend(str(a) for a in field_of(capability, "Actions", []) or [])
        users.append(
            User(
                alias=str(field_of(item, "Alias", "") or ""),
                api_key=str(field_of(item, "APIKey", "") or ""),
                username=str(field_of(item, "Username", "") or ""),
                password=str(field_of(item, "Password", "") or ""),
                actions=tuple(actions),
            )
        )
    return users


def _unauthorized(reason: str) -> ApiError:
    return ApiError(
        "Request Unauthorized", "Unauthorized", component="Authorizer", details={"reason": reason}
    )


def _action(request: Request) -> str:
    verb = "read" if request.method in ("GET", "HEAD") else "write"
    parts = request.path.strip("/").split("/")
    resource = "agent"
    if len(parts) > 3 and parts[2] == "orchestrator":
        resource = {"jobs": "job", "nodes": "node"}.get(parts[3], parts[3])
    return f"{verb}:{resource}"


class Authorizer:
    def __init__(self, users: list[User]):
        self.users = users

    def __call__(self, request: Request) -> None:
        if not self.users:
            return
        if request.path.rstrip("/") in _OPEN_PATHS or request.path.startswith(_OPEN_PREFIXES):
            return
        user = self._identify(request.headers.get("Authorization", ""))
        action = _action(request)
        if not user.may(action):
            raise ApiError(
                f"user {user.alias or user.username} is not allowed to {action}",
                "Forbidden",
                component="Authorizer",
            )

    def _identify(self, header: str) -> User:
        if not header:
            raise _unauthorized("Missing Authorization header")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() == "bearer":
            for user in self.users:
                if user.api_key and hmac.compare_digest(user.api_key, credential):
                    return user
            raise _unauthorized("invalid API key")
        if scheme.lower() == "basic":
            try:
                name, _, password = base64.b64decode(credential).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise _unauthorized("malformed basic credentials") from exc
            for user in self.users:
                known = user.username == name and bool(user.username and user.password)
                if known and hmac.compare_digest(user.password, password):
                    return user
            raise _unauthorized("invalid username or password")
        raise _unauthorized(f"unsupported authorization scheme {scheme!r}")
