"""fleetkit itself as a package for a host: a wheelhouse built here once, installed there.

The watch runs on the control plane, so that host needs this fleetkit (the
same code that provisions it) in a virtualenv. On the admin machine,
``pip wheel`` builds fleetkit from this source tree, with every dependency
(``transfer_mode: push``: the control plane never needs an index), or
fleetkit alone (``pull``: the control plane's pip fetches the dependencies
from its own index, built for its own Python and architecture). The wheels
go into one tar in the push cache, named by a key over everything that
decides them (this source tree, the Python version, the architecture, the
mode), so it is built once and reused until the code changes.

On the host, :class:`WheelhouseStep` compares that key with the one recorded
by the last install: equal, nothing to do; else the tar is uploaded (on
stdin, like the packages), unpacked in a temporary directory and installed
with ``pip install --no-index`` into a new virtualenv next to the old one,
which a symlink then switches to (the service restarts on the new code).

Candidly: push-mode wheels are built by *this* machine's Python, so the
control plane needs the same Python version and architecture (the lab's
hosts share this machine's /usr, so they have it); the install checks and
says so, and ``transfer_mode: pull`` is the way out. Building needs a
source checkout (pyproject.toml beside the fleetkit package).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fleetkit
from fleetkit.foundation.status import ConfigError
from fleetkit.hostfacts.changes import Change, Notification, StepPlan, changing, unchanged
from fleetkit.hostfacts.facts import Fact, FactView, FileLook, PathExists
from fleetkit.hostfacts.packages import PackageError
from fleetkit.hostfacts.steps import PlanContext, Step

#: Exit code of the install when the host's python3 cannot use the wheels.
PYTHON_EXIT = 89
MANIFEST = "fleetkit-wheelhouse.json"
PULL_HINT = "use transfer_mode: pull, or provision from a machine with the same Python"
#: Seconds ``pip wheel`` may take (it may download every dependency once).
BUILD_TIMEOUT = 900.0


@dataclass(frozen=True)
class Wheelhouse:
    """A built wheelhouse: its key, the tar in the cache, and what it was built for."""

    key: str
    archive: Path
    python: str
    #: push: every dependency inside; pull: fleetkit alone (the host's index has the rest).
    mode: str

    def payload(self) -> bytes:
        return self.archive.read_bytes()


def source_root() -> Path:
    """The source tree this fleetkit runs from (pyproject.toml beside the package)."""
    root = Path(fleetkit.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise ConfigError(
            f"watch.enabled installs this fleetkit on the control plane, built from its source "
            f"checkout, but {root} has no pyproject.toml (run fleetkit from its repository)",
            key="watch.enabled",
        )
    return root


def _source_files(root: Path) -> list[Path]:
    package = root / "fleetkit"
    return sorted(
        p
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def wheelhouse_key(root: Path, mode: str) -> str:
    """Changes exactly when the wheels would: source files, Python, architecture, mode."""
    digest = hashlib.sha256(f"{python_version()}\0{platform.machine()}\0{mode}".encode())
    for path in [root / "pyproject.toml", *_source_files(root)]:
        digest.update(b"\0" + str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build_wheelhouse(cache_dir: str | Path, mode: str, root: Path | None = None) -> Wheelhouse:
    """The wheelhouse for this source tree, built into ``cache_dir`` unless already there."""
    root = root or source_root()
    key = wheelhouse_key(root, mode)
    cache = Path(cache_dir)
    archive = cache / f"fleetkit-wheelhouse-{key[:16]}.tar"
    built = Wheelhouse(key, archive, python_version(), mode)
    if archive.is_file():
        return built
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".wheelhouse-") as tmp:
        work = Path(tmp)
        source = work / "src"
        source.mkdir()
        shutil.copy2(root / "pyproject.toml", source / "pyproject.toml")
        shutil.copytree(
            root / "fleetkit",
            source / "fleetkit",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"),
        )
        wheels = work / "wheels"
        _pip_wheel(source, wheels, with_deps=mode == "push")
        partial = work / "wheelhouse.tar"
        partial.write_bytes(_tar(wheels, {"key": key, "python": built.python, "mode": mode}))
        os.replace(partial, archive)
    return built


def _pip_wheel(source: Path, wheels: Path, *, with_deps: bool) -> None:
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
    argv += ([] if with_deps else ["--no-deps"]) + ["--wheel-dir", str(wheels), str(source)]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=BUILD_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PackageError(f"building fleetkit's wheelhouse (pip wheel) failed: {exc}") from None
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise PackageError(
            f"building fleetkit's wheelhouse (pip wheel) failed (exit {done.returncode}): "
            + (" | ".join(said) or "no message")
        )


def _tar(wheels: Path, manifest: dict[str, Any]) -> bytes:
    """Reproducible: sorted names, no times, no owners."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        files = [(MANIFEST, json.dumps(manifest, sort_keys=True).encode() + b"\n")]
        files += [(p.name, p.read_bytes()) for p in sorted(wheels.glob("*.whl"))]
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass(frozen=True)
class WheelhouseStep(Step):
    """fleetkit installed in ``venv`` from the wheelhouse; nothing to do when the key matches."""

    wheelhouse: Wheelhouse
    #: The symlink services run from (``<venv>/bin/fleetkit``).
    venv: str
    #: The key of the last install.
    record: str
    notify: tuple[Notification, ...] = ()

    def describe(self) -> str:
        return f"fleetkit in {self.venv}"

    def looks(self, context: PlanContext) -> tuple[Fact[Any], ...]:
        return (FileLook(self.record), PathExists(f"{self.venv}/bin/fleetkit"))

    def plan(self, facts: FactView, context: PlanContext) -> StepPlan:
        state = facts[FileLook(self.record)]
        installed = state.text.strip() if state.exists else ""
        present = facts[PathExists(f"{self.venv}/bin/fleetkit")]
        short = self.wheelhouse.key[:12]
        if installed == self.wheelhouse.key and present:
            return unchanged(f"fleetkit {fleetkit.__version__} installed ({short})")
        was = installed[:12] if installed and present else "not installed"
        install = Change(
            f"install fleetkit into {self.venv}",
            self.install_command(),
            stdin=b"" if context.check else self.wheelhouse.payload(),
            diff=f"fleetkit wheelhouse on host: {was} -> {short} ({self.wheelhouse.mode})\n",
            notify=self.notify,
        )
        return changing(
            f"installed fleetkit {fleetkit.__version__} ({short}; was {was})",
            f"would install fleetkit {fleetkit.__version__} ({short}; now {was})",
            install,
        )

    def install_command(self) -> str:
        w = self.wheelhouse
        venv = self.venv
        new = f"{venv}-{w.key[:12]}"
        q = shlex.quote
        if w.mode == "push":  # every wheel is in the wheelhouse: same Python needed
            check = f'[ "$have" = {q(w.python)} ]'
            need = f"Python {w.python} (the wheels were built for it)"
            # no index, and none of the host's pip configuration: only these wheels count
            index, env = "--no-index", "PIP_CONFIG_FILE=/dev/null "
        else:  # fleetkit's wheel is pure Python; the host's index has the dependencies
            check = 'python3 -c "import sys; sys.exit(sys.version_info < (3, 11))"'
            need = "Python 3.11 or newer"
            index, env = "", ""
        # fixed text inside double quotes: only $have (python3's own answer) is expanded
        message = f"fleetkit needs {need}; the host's python3 is $have: {PULL_HINT}"
        return (
            "set -e; d=$(mktemp -d /var/tmp/fleetkit-wheels.XXXXXX); "
            'trap \'rm -rf "$d"\' EXIT; tar -xf - -C "$d"; '
            "have=$(python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])' "
            "2>/dev/null || echo none); "
            f'if ! {check}; then echo "{message}" >&2; '
            f"exit {PYTHON_EXIT}; fi; "
            f"mkdir -p {q(os.path.dirname(venv))}; rm -rf {q(new)}; python3 -m venv {q(new)}; "
            f"{env}{q(new)}/bin/pip install --quiet --disable-pip-version-check "
            f'{index} --find-links "$d" fleetkit; '
            f"ln -sfn {q(new)} {q(venv + '.new')} && mv -Tf {q(venv + '.new')} {q(venv)}; "
            f'for old in {q(venv)}-*; do [ "$old" = {q(new)} ] || rm -rf "$old"; done; '
            f"printf '%s\\n' {q(w.key)} > {q(self.record)}"
        )
