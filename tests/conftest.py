"""Shared fixtures: the local lab fleet (see ``lab/``).

``lab`` is one session-wide lab (control plane ``orch-1`` + ``node-1..3``),
started on first use and NOT provisioned. In every lab made here, every
second compute host (node-2, node-4, ...) has a cloud-style machine hostname
(``ip-10-...``) that differs from its inventory name, as real fleets do: end-to-end
tests exercise the identity rule (inventory name = node ID; ``hostname`` = the
machine's own; ``host.hostname`` is the machine's name in a test); ``tests/e2e/conftest.py`` builds
``provisioned_lab`` on top of it. ``lab_factory`` makes extra labs (any size,
network namespaces, S3) for tests that break hosts or need a special shape;
each is torn down when its test ends. ``netns_lab`` is a session-wide lab
whose hosts each have their own network namespace (for firewall tests).

Tests marked ``lab`` are skipped, with the reason, when this machine cannot
run a lab (not root, or sshd/unshare/nsenter missing); CI has all of them.
Nothing here imports fleetkit modules, so the fixtures work while fleetkit
is half-built.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the lab ships with the repository, not with fleetkit
    sys.path.insert(0, str(REPO))

from lab.fleet import Lab  # noqa: E402

LabFactory = Callable[..., Lab]


def lab_unavailable_reason() -> str | None:
    """Why this machine cannot run the lab, or None when it can."""
    if os.geteuid() != 0:
        return "the lab needs root (namespaces, overlay mounts)"
    if not os.access("/usr/sbin/sshd", os.X_OK):
        return "the lab needs /usr/sbin/sshd (apt-get install openssh-server)"
    for tool in ("unshare", "nsenter", "dpkg-deb", "ip"):
        if shutil.which(tool) is None:
            return f"the lab needs the {tool} command"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = lab_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"lab test skipped: {reason}")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


def _require_lab() -> None:
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(f"lab not available: {reason}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One control plane + 3 compute hosts for the whole session, not provisioned."""
    _require_lab()
    started = Lab(
        tmp_path_factory.mktemp("lab"), compute=3, detach=False, cloud_hostnames=True
    ).up()
    try:
        yield started
    finally:
        started.down()


@pytest.fixture(scope="session")
def netns_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Like ``lab`` but every host in its own network namespace (10.R.S.N), not provisioned."""
    _require_lab()
    started = Lab(
        tmp_path_factory.mktemp("netns-lab"),
        compute=3,
        netns=True,
        detach=False,
        cloud_hostnames=True,
    ).up()
    try:
        yield started
    finally:
        started.down()


@pytest.fixture
def lab_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFactory]:
    """``lab_factory(compute=3, netns=False, s3=False, **options) -> Lab`` (started).

    ``options`` go to :class:`Lab` (``latency=0.04``, ``machine_names={...}``,
    ``cloud_hostnames=False`` to make every machine named like its host; True by
    default). Every lab made is torn down when the test ends.
    """
    _require_lab()
    made: list[Lab] = []

    def make(*, compute: int = 3, netns: bool = False, s3: bool = False, **options: Any) -> Lab:
        options.setdefault("cloud_hostnames", True)
        started = Lab(
            tmp_path_factory.mktemp("lab"),
            compute=compute,
            netns=netns,
            s3=s3,
            detach=False,
            **options,
        )
        made.append(started)
        return started.up()

    try:
        yield make
    finally:
        errors: list[str] = []
        for started in reversed(made):
            try:
                started.down()
            except Exception as exc:  # tear down the others anyway, then report
                errors.append(str(exc))
        if errors:
            pytest.fail("lab teardown failed: " + "; ".join(errors))
