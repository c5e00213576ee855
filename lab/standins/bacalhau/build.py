"""Build the release-shaped tarball of the Bacalhau stand-in.

``build_tarball(out_dir)`` writes ``bacalhau_<version>_linux_<arch>.tar.gz``
holding ONE executable file, ``bacalhau``: a Python zipapp of the
``bacalhau_standin`` package with ``#!/usr/bin/python3``, like the official
release archive holds one static binary. The build is deterministic (fixed
timestamps), so the tarball's SHA-256 only changes when the source does.

Run ``python -m lab.standins.bacalhau.build OUT_DIR`` to build by hand.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "bacalhau_standin"
INTERPRETER = "/usr/bin/python3"
_EPOCH = (1980, 1, 1, 0, 0, 0)
_MAIN = (
    "# LAB STAND-IN for Bacalhau: entry point of the zipapp.\n"
    "from bacalhau_standin.cli import main\n"
    "raise SystemExit(main())\n"
)


def _zip_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def build_zipapp(version: str = "v1.9.3", arch: str = "amd64") -> bytes:
    """The ``bacalhau`` executable: shebang line + zip of the stand-in package."""
    stamp = {
        "GitVersion": version,
        "GitCommit": "standin",
        "BuildDate": "2025-01-01T00:00:00Z",
        "GOARCH": arch,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        _zip_member(archive, "__main__.py", _MAIN.encode())
        for path in sorted(SOURCE.glob("*.py")):
            _zip_member(archive, f"bacalhau_standin/{path.name}", path.read_bytes())
        for name, code in _bytecode().items():
            _zip_member(archive, f"bacalhau_standin/{name}", code)
        _zip_member(archive, "bacalhau_standin/build.json", json.dumps(stamp).encode())
    return f"#!{INTERPRETER}\n".encode() + buffer.getvalue()


def _bytecode() -> dict[str, bytes]:
    """``module.pyc`` for each module, compiled by the hosts' interpreter.

    zipimport cannot cache bytecode, so without these every ``bacalhau``
    invocation (a ``version --client`` per verify) recompiles the whole
    package. Unchecked hash-based pycs keep the build reproducible.
    """
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "bacalhau_standin"
        shutil.copytree(SOURCE, target, ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run(
            [
                INTERPRETER,
                "-m",
                "compileall",
                "-q",
                "-b",
                "--invalidation-mode",
                "unchecked-hash",
                "-d",
                "bacalhau_standin",
                str(target),
            ],
            check=True,
            capture_output=True,
        )
        return {path.name: path.read_bytes() for path in sorted(target.glob("*.pyc"))}


def tarball_name(version: str = "v1.9.3", arch: str = "amd64") -> str:
    return f"bacalhau_{version}_linux_{arch}.tar.gz"


def build_tarball(out_dir: Path, version: str = "v1.9.3", arch: str = "amd64") -> Path:
    """Write the release-shaped tarball into ``out_dir`` and return its path."""
    executable = build_zipapp(version, arch)
    member = tarfile.TarInfo("bacalhau")
    member.size = len(executable)
    member.mode = 0o755
    member.mtime = 0
    member.uname = member.gname = "root"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        archive.addfile(member, io.BytesIO(executable))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / tarball_name(version, arch)
    tmp = target.with_suffix(".tmp")
    with (
        open(tmp, "wb") as handle,
        gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) as packed,
    ):
        packed.write(raw.getvalue())
    tmp.replace(target)
    return target


if __name__ == "__main__":
    print(build_tarball(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
