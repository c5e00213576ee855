"""The evidence bundle: written whole and reproducibly, checked without ever extracting."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetkit.foundation.status import ConfigError, ExitStatus, UsageError, exit_status_for
from fleetkit.report.bundle import FORMAT, BundleRun, NodeVersions, write_bundle
from fleetkit.report.bundlecheck import BundleError, Limits, check_bundle
from fleetkit.report.samples import lab_sample

NOW = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
OUTPUT = b'[\n  {"hostname": "node-1", "nodeID": "n-1", "pid": "42"}\n]\n'


def runs() -> list[BundleRun]:
    return [
        BundleRun(
            "run-0412",
            "query",
            "SELECT pid FROM processes WHERE name = 'kworkerd'",
            NOW - timedelta(minutes=5),
            OUTPUT,
            finished_at=NOW - timedelta(minutes=4),
            nodes=(
                NodeVersions(
                    "n-1", "node-1", "5.23.1", "v1.9.3", "run-0400", NOW - timedelta(hours=1)
                ),
                NodeVersions("n-2", "node-2", None, "v1.9.3"),
            ),
        ),
        BundleRun("run-0411", "hunt", "SELECT path FROM hash", NOW, b"a,b\n1,2\n", "csv"),
    ]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "evidence.tar.gz"
    write_bundle(path, lab_sample(), runs())
    return path


def members_of(path: Path) -> dict[str, bytes]:
    """Our own (trusted) bundle's files, to rebuild altered copies."""
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def write_tgz(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(gzip.compress(buffer.getvalue()))
    return path


def file_entry(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def rebuilt(path: Path, files: dict[str, bytes]) -> Path:
    return write_tgz(path, [file_entry(name, data) for name, data in files.items()])


# --------------------------------------------------------------------------- writing


def test_bundle_holds_report_outputs_and_a_manifest_of_hashes(bundle: Path) -> None:
    files = members_of(bundle)
    assert list(files) == [
        "manifest.json",
        "report.html",
        "runs/run-0412.json",
        "runs/run-0411.csv",
    ]
    assert files["runs/run-0412.json"] == OUTPUT
    assert files["report.html"].startswith(b"<!DOCTYPE html>")
    manifest = json.loads(files["manifest.json"])
    assert manifest["format"] == FORMAT
    assert manifest["fleetkit_version"] == "0.1.0"
    assert manifest["generated_at"] == "2026-11-27T09:30:00Z"
    for name, data in files.items():
        if name != "manifest.json":
            assert manifest["files"][name] == {
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
            }
    first = manifest["runs"][0]
    assert first["run_id"] == "run-0412"
    assert first["sql"] == "SELECT pid FROM processes WHERE name = 'kworkerd'"
    assert first["started_at"] == "2026-11-27T09:25:00Z"
    assert first["finished_at"] == "2026-11-27T09:26:00Z"
    assert first["nodes"][0] == {
        "node_id": "n-1",
        "hostname": "node-1",
        "osquery_version": "5.23.1",
        "bacalhau_version": "v1.9.3",
        "verified_by": "run-0400",
        "verified_at": "2026-11-27T08:30:00Z",
    }
    assert manifest["runs"][1]["file"] == "runs/run-0411.csv"


def test_the_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    a = write_bundle(tmp_path / "a.tar.gz", lab_sample(), runs())
    b = write_bundle(tmp_path / "b.tar.gz", lab_sample(), runs())
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.manifest_sha256 == b.manifest_sha256
    assert oct(a.path.stat().st_mode & 0o777) == "0o600"  # evidence can be sensitive


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (BundleRun("../../etc/cron.d/x", "query", "S", NOW, b""), "cannot name a file"),
        (BundleRun("run-1", "query", "S", NOW, b"", "xml"), "unknown output format"),
    ],
)
def test_bad_runs_are_refused_before_anything_is_written(
    tmp_path: Path, run: BundleRun, message: str
) -> None:
    target = tmp_path / "evidence.tar.gz"
    target.write_bytes(b"previous")
    with pytest.raises(UsageError, match=message) as error:
        write_bundle(target, lab_sample(), [run])
    assert exit_status_for(error.value) is ExitStatus.BAD_INPUT
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["evidence.tar.gz"]


def test_a_run_given_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="given twice"):
        write_bundle(tmp_path / "e.tar.gz", lab_sample(), [runs()[0], runs()[0]])


@pytest.mark.parametrize("where", ["not-a-dir/evidence.tar.gz", "a-dir"])
def test_an_unwritable_path_is_bad_input_and_leaves_no_partial_file(
    tmp_path: Path, where: str
) -> None:
    (tmp_path / "not-a-dir").write_text("x")
    (tmp_path / "a-dir").mkdir()
    target = tmp_path / where
    with pytest.raises(ConfigError, match="cannot write") as error:
        write_bundle(target, lab_sample(), runs())
    assert exit_status_for(error.value) is ExitStatus.BAD_INPUT
    assert str(target) in str(error.value)
    assert sorted(os.listdir(tmp_path)) == ["a-dir", "not-a-dir"]
    assert os.listdir(tmp_path / "a-dir") == []


# --------------------------------------------------------------------------- checking


def test_an_untouched_bundle_checks_out(bundle: Path) -> None:
    result = check_bundle(bundle)
    assert result.ok
    assert result.checked == ("report.html", "runs/run-0411.csv", "runs/run-0412.json")
    manifest = members_of(bundle)["manifest.json"]
    assert result.manifest_sha256 == hashlib.sha256(manifest).hexdigest()


def test_a_changed_file_is_named(bundle: Path, tmp_path: Path) -> None:
    files = members_of(bundle)
    files["runs/run-0412.json"] = OUTPUT.replace(b"42", b"43")
    result = check_bundle(rebuilt(tmp_path / "t.tar.gz", files))
    assert not result.ok
    assert result.changed == ("runs/run-0412.json",)
    assert result.problems() == ["changed: runs/run-0412.json"]


def test_a_missing_file_is_named(bundle: Path, tmp_path: Path) -> None:
    files = members_of(bundle)
    del files["report.html"]
    result = check_bundle(rebuilt(tmp_path / "t.tar.gz", files))
    assert result.missing == ("report.html",)
    assert result.problems() == ["missing: report.html"]


def test_an_added_plain_file_is_named(bundle: Path, tmp_path: Path) -> None:
    files = members_of(bundle)
    files["runs/planted.json"] = b"[]"
    result = check_bundle(rebuilt(tmp_path / "t.tar.gz", files))
    assert result.added == ("runs/planted.json",)
    assert result.problems() == ["added: runs/planted.json"]


def test_a_rewritten_manifest_shows_in_its_digest(bundle: Path, tmp_path: Path) -> None:
    files = members_of(bundle)
    manifest = json.loads(files["manifest.json"])
    files["runs/run-0412.json"] = b"[]"
    manifest["files"]["runs/run-0412.json"] = {
        "sha256": hashlib.sha256(b"[]").hexdigest(),
        "bytes": 2,
    }
    files["manifest.json"] = json.dumps(manifest).encode()
    result = check_bundle(rebuilt(tmp_path / "t.tar.gz", files))
    assert result.ok  # consistent forgery: only the recorded manifest digest tells
    assert result.manifest_sha256 != check_bundle(bundle).manifest_sha256


# --------------------------------------------------------------------------- hostile bundles


def link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (file_entry("../../etc/cron.d/evil", b"x"), "unsafe member name"),
        (file_entry("/etc/passwd", b"x"), "unsafe member name"),
        (file_entry("runs/./x.json", b"x"), "unsafe member name"),
        (file_entry("runs\\..\\x", b"x"), "unsafe member name"),
        (file_entry("bad\x1b[2Jname", b"x"), "unsafe member name"),
        (link("runs/l.json", "/etc/shadow", tarfile.SYMTYPE), "not a plain file"),
        (link("runs/h.json", "report.html", tarfile.LNKTYPE), "not a plain file"),
        (link("runs/dev", "", tarfile.CHRTYPE), "not a plain file"),
        (link("runs", "", tarfile.DIRTYPE), "not a plain file"),
    ],
)
def test_hostile_members_are_refused_and_nothing_is_extracted(
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    entry: tuple[tarfile.TarInfo, bytes | None],
    message: str,
) -> None:
    files = members_of(bundle)
    hostile = write_tgz(
        tmp_path / "hostile.tar.gz", [entry, *(file_entry(n, d) for n, d in files.items())]
    )
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    with pytest.raises(BundleError, match=message) as error:
        check_bundle(hostile)
    assert exit_status_for(error.value) is ExitStatus.BAD_INPUT
    assert str(hostile) in str(error.value)
    assert "\x1b" not in str(error.value)
    assert os.listdir(workdir) == []


def test_a_member_declaring_a_huge_size_is_refused_before_reading(tmp_path: Path) -> None:
    info = tarfile.TarInfo("runs/huge.json")
    info.size = 10**12  # a terabyte announced, a few bytes present
    buffer = io.BytesIO()
    buffer.write(info.tobuf(format=tarfile.PAX_FORMAT))
    buffer.write(b"\0" * 1024)
    path = tmp_path / "huge.tar.gz"
    path.write_bytes(gzip.compress(buffer.getvalue()))
    with pytest.raises(BundleError, match="more than"):
        check_bundle(path)


def test_a_tar_bomb_stops_at_the_decompression_cap(tmp_path: Path) -> None:
    zeros = b"\0" * (64 * 1024**2)
    bomb = write_tgz(tmp_path / "bomb.tar.gz", [file_entry("runs/zeros.json", zeros)])
    assert bomb.stat().st_size < 200_000
    with pytest.raises(BundleError, match="decompresses to more than 8,388,608 bytes"):
        check_bundle(bomb, limits=Limits(total_bytes=8 * 1024**2))


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    many = write_tgz(
        tmp_path / "many.tar.gz", [file_entry(f"runs/{i}.json", b"") for i in range(50)]
    )
    with pytest.raises(BundleError, match="more than 20 members"):
        check_bundle(many, limits=Limits(members=20))


def test_a_duplicated_member_is_refused(bundle: Path, tmp_path: Path) -> None:
    files = members_of(bundle)
    entries = [file_entry(n, d) for n, d in files.items()]
    entries.append(file_entry("report.html", b"<p>shadow</p>"))
    with pytest.raises(BundleError, match="appears twice"):
        check_bundle(write_tgz(tmp_path / "dup.tar.gz", entries))


def manifest_of(files: object) -> bytes:
    return json.dumps({"format": FORMAT, "files": files}).encode()


ZERO = "0" * 64


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"format": "other"}', "not a fleetkit-evidence/1 manifest"),
        (b'{"format": "fleetkit-evidence/1"}', "no files object"),
        (manifest_of({"../x": {"sha256": ZERO, "bytes": 1}}), "unsafe file"),
        (manifest_of({"manifest.json": {"sha256": ZERO, "bytes": 1}}), "unsafe file"),
        (manifest_of({"report.html": {"sha256": "xyz", "bytes": 1}}), "64 lowercase hex"),
        (manifest_of({"report.html": {"sha256": ZERO, "bytes": True}}), "not a size"),
        (manifest_of({"report.html": "abc"}), "64 lowercase hex"),
    ],
)
def test_a_bad_manifest_is_bad_input(tmp_path: Path, manifest: bytes, message: str) -> None:
    path = rebuilt(tmp_path / "m.tar.gz", {"manifest.json": manifest, "report.html": b"x"})
    with pytest.raises(BundleError, match=message):
        check_bundle(path)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot read the bundle"):
        check_bundle(tmp_path / "absent.tar.gz")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not gzip")
    with pytest.raises(BundleError, match=r"not a readable \.tar\.gz"):
        check_bundle(junk)
    no_manifest = rebuilt(tmp_path / "n.tar.gz", {"report.html": b"x"})
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        check_bundle(no_manifest)
    with pytest.raises(BundleError, match="refused: 16 bytes, more than 10"):
        check_bundle(junk, limits=Limits(bundle_bytes=10))
