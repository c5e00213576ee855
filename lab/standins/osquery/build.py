"""Build the osquery stand-in ``.deb`` with the official package's layout.

Layout (reference/osquery.md §1): ``/opt/osquery/bin/osqueryd`` (here a
Python stand-in), ``/usr/bin/osqueryi`` and ``/usr/bin/osqueryd`` symlinked to
it, ``/usr/lib/systemd/system/osqueryd.service``, ``/etc/default/osqueryd``,
empty ``/etc/osquery``, ``/var/osquery`` and ``/var/log/osquery``, and a
postinst that only reloads systemd when systemd runs. Like the official
package it never starts the daemon. The Debian version is
``<version>-1.linux``, as ``dpkg-query`` reports for the real one.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: The interpreter the stand-in runs with on the hosts (lab hosts overlay the real /usr).
PYTHON = "/usr/bin/python3"
#: Fixed timestamps make the package byte-for-byte reproducible.
SOURCE_DATE_EPOCH = "1782259200"

UNIT = """\
[Unit]
Description=osquery daemon
After=network.target syslog.service

[Service]
TimeoutStartSec=0
EnvironmentFile=/etc/default/osqueryd
ExecStartPre=/bin/sh -c "if [ ! -f $FLAG_FILE ]; then touch $FLAG_FILE; fi"
ExecStartPre=/bin/sh -c "if [ -f $LOCAL_PIDFILE ]; then mv $LOCAL_PIDFILE $PIDFILE; fi"
ExecStart=/opt/osquery/bin/osqueryd --flagfile $FLAG_FILE --config_path $CONFIG_FILE
Restart=on-failure
KillMode=control-group
KillSignal=SIGTERM
TimeoutStopSec=15
CPUQuota=20%

[Install]
WantedBy=multi-user.target
"""

DEFAULTS = """\
FLAG_FILE="/etc/osquery/osquery.flags"
CONFIG_FILE="/etc/osquery/osquery.conf"
LOCAL_PIDFILE="/var/osquery/osqueryd.pidfile"
PIDFILE="/var/run/osqueryd.pidfile"
"""

POSTINST = """\
#!/bin/sh
set -e
# Like the official package: reload systemd when it runs, never start the daemon.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
"""

EXAMPLE_CONF = """\
{
  "options": {
    "host_identifier": "hostname",
    "schedule_splay_percent": 10
  },
  "schedule": {}
}
"""


def control(version: str) -> str:
    return (
        "Package: osquery\n"
        f"Version: {version}-1.linux\n"
        "Section: default\n"
        "Priority: optional\n"
        "Architecture: amd64\n"
        "Maintainer: fleetkit lab <lab@fleetkit.invalid>\n"
        "Depends: libc6 (>=2.12), zlib1g\n"
        "Homepage: https://osquery.io\n"
        "Description: osquery STAND-IN for the fleetkit lab (not the official package)\n"
        " Same paths, unit and CLI contract as osquery; answers SQL from the lab host's\n"
        " real facts with a small Python program run by /usr/bin/python3.\n"
    )


def build_deb(out_dir: Path, version: str = "5.23.1") -> Path:
    """Write ``osquery_<version>-1.linux_amd64.deb`` into ``out_dir`` and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="osquery-deb-") as scratch:
        root = Path(scratch) / "pkg"
        _stage(root, version)
        target = out_dir / f"osquery_{version}-1.linux_amd64.deb"
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(target)],
            check=True,
            capture_output=True,
            env=env,
        )
    return target


def _stage(root: Path, version: str) -> None:
    _put(root / "DEBIAN/control", control(version), 0o644)
    _put(root / "DEBIAN/postinst", POSTINST, 0o755)
    _put(root / "DEBIAN/conffiles", "/etc/default/osqueryd\n", 0o644)
    _put(root / "opt/osquery/bin/osqueryd", (HERE / "bin/osqueryd").read_text(), 0o755)
    lib = root / "opt/osquery/lib/osquery_standin"
    for source in sorted((HERE / "lib/osquery_standin").glob("*.py")):
        _put(lib / source.name, source.read_text(), 0o644)
    _put(lib / "VERSION", version + "\n", 0o644)
    _compile(lib)
    _put(root / "opt/osquery/share/osquery/osquery.example.conf", EXAMPLE_CONF, 0o644)
    _put(root / "usr/lib/systemd/system/osqueryd.service", UNIT, 0o644)
    _put(root / "etc/default/osqueryd", DEFAULTS, 0o644)
    for directory in ("etc/osquery", "var/osquery", "var/log/osquery", "usr/bin"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    for name in ("osqueryi", "osqueryd"):
        (root / "usr/bin" / name).symlink_to("/opt/osquery/bin/osqueryd")
    for path in root.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    root.chmod(0o755)
    epoch = int(SOURCE_DATE_EPOCH)
    for path in [root, *root.rglob("*")]:
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def _compile(lib: Path) -> None:
    """Ship bytecode for the hosts' /usr/bin/python3, as Debian's python packages do.

    Hash-based (unchecked) pycs keep the package reproducible and spare every
    ``osqueryi`` run the compile step; the launcher never writes bytecode.
    """
    subprocess.run(
        [
            PYTHON,
            "-m",
            "compileall",
            "-q",
            "--invalidation-mode",
            "unchecked-hash",
            "-d",
            "/opt/osquery/lib/osquery_standin",
            str(lib),
        ],
        check=True,
        capture_output=True,
    )
    for path in lib.rglob("*.pyc"):
        path.chmod(0o644)


def _put(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


if __name__ == "__main__":  # pragma: no cover - manual use: python -m lab.standins.osquery.build
    import sys

    built = build_deb(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print(built)
