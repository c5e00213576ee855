"""``invoke report`` on the lab: the real fleet's recorded runs, opened in headless Chromium.

The story: verify, a policy run with an unencrypted RSA key planted on node-2,
a hunt for the trojan planted on node-1 and node-3, a query whose rows carry a
hostile file name planted on node-1 (markup, an event handler, an escape
code). Then the report must mark node-2 failing, count the hunt's two hosts,
show the hostile name as text with nothing run; the evidence bundle must hold
each run's output byte for byte as ``invoke show`` prints it, check clean, and
name the file someone changed.

The runs go to a history of this test's own (a copy of the lab's settings
naming another history file), so other tests' runs in the session lab do not
change the counts.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fleetkit.report.browser import launch, unavailable_reason
from lab.fleet import Lab
from tests.e2e.conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
SSH_PACK = str(REPO / "fleetkit" / "packs" / "ssh-keys.yaml")
TROJAN_PATH = "/var/www/htdocs/wp-content/themes/goldenrod/functions.php"
TROJAN = b"<?php /* goldenrod worm */ eval($_POST['x']); ?>\n"
WEAK_KEY = "/root/.ssh/id_rsa_report_e2e"
EVIL_DIR = "/srv/report-e2e"
#: A file name a compromised node could carry (no "/": it is one name).
EVIL_NAME = "<img src=x onerror=window.__pwned=1>\x1b[31m<script>window.__pwned=2<\\script>"
PWNED = "typeof window.__pwned === 'undefined' ? null : window.__pwned"


@pytest.fixture
def settings(provisioned_lab: Lab) -> Iterator[str]:
    """The lab's settings, with a history file of this test's own (beside the lab's)."""
    lab = provisioned_lab
    data = yaml.safe_load(lab.settings_path.read_text())
    data["history"] = {"path": ".fleetkit/report-e2e.db"}
    path = lab.workdir / "fleetkit-report-e2e.yaml"
    path.write_text(yaml.safe_dump(data))
    yield str(path)
    for leftover in lab.workdir.glob(".fleetkit/report-e2e.db*"):
        leftover.unlink()
    path.unlink()


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


@pytest.mark.lab
def test_report_and_bundle_of_the_lab_fleet(
    provisioned_lab: Lab, settings: str, tmp_path: Path
) -> None:
    lab = provisioned_lab
    n1, n2, n3 = (lab.host(f"node-{i}") for i in (1, 2, 3))

    def fleetkit(*argv: str) -> tuple[int, str, str]:
        result = run_cli(lab, *argv, "--settings", settings)
        return result.exit_code, result.stdout, result.stderr

    try:
        n2.sh(f"ssh-keygen -q -t rsa -b 2048 -m PEM -N '' -f {WEAK_KEY}")
        for host in (n1, n3):
            host.write_file(TROJAN_PATH, TROJAN)
        n1.write_file(f"{EVIL_DIR}/{EVIL_NAME}", b"x")

        code, _, err = fleetkit("verify")
        assert code == 0, err
        code, _, err = fleetkit("policy", "--pack", SSH_PACK, "--format", "json")
        assert code == 3, err
        sha = hashlib.sha256(TROJAN).hexdigest()
        code, _, err = fleetkit("hunt", "--path", TROJAN_PATH, "--sha256", sha)
        assert code == 3, err
        sql = f"SELECT path, filename FROM file WHERE directory = '{EVIL_DIR}'"
        code, query_out, err = fleetkit("query", sql)
        assert code == 0, err
        assert json.loads(query_out)[0]["filename"] == EVIL_NAME

        page_file = tmp_path / "report.html"
        code, _, err = fleetkit("report", "--output", str(page_file))
        assert code == 0, err
        assert "readiness 4/4 ready" in err
        assert "1 of 3 host(s) failing a policy" in err
        assert "2 host(s) with hunt hits in 1 hunt(s)" in err
        check_page(page_file)

        bundle = tmp_path / "evidence.tar.gz"
        code, _, err = fleetkit("report", "--bundle", str(bundle))
        assert code == 0, err
        files = members(bundle)
        manifest = json.loads(files["manifest.json"])
        kinds = {run["kind"]: run for run in manifest["runs"]}
        assert set(kinds) == {"verify", "policy", "hunt", "query"}
        query_run = kinds["query"]
        assert query_run["sql"] == sql
        assert files[query_run["file"]] == query_out.encode()  # what the query printed
        code, shown, err = fleetkit("show", query_run["run_id"], "--format", "json")
        assert code == 0, err
        assert files[query_run["file"]] == shown.encode()
        versions = {node["node_id"]: node for node in kinds["policy"]["nodes"]}
        assert versions["node-2"]["osquery_version"]
        assert versions["node-2"]["verified_by"] == kinds["verify"]["run_id"]

        code, _, err = fleetkit("report", "--check-bundle", str(bundle))
        assert code == 0, err
        tampered = tmp_path / "tampered.tar.gz"
        rewrite(bundle, tampered, query_run["file"])
        code, _, err = fleetkit("report", "--check-bundle", str(tampered))
        assert code == 1, err
        assert f"changed: {query_run['file']}" in err
    finally:
        n2.sh(f"rm -f {WEAK_KEY} {WEAK_KEY}.pub", check=False)
        for host in (n1, n3):
            host.sh("rm -rf /var/www/htdocs", check=False)
        n1.sh(f"rm -rf {EVIL_DIR}", check=False)


def rewrite(source: Path, target: Path, name: str) -> None:
    """A copy of the bundle in which one file says something else (its manifest unchanged)."""
    buffer = io.BytesIO()
    with tarfile.open(source, "r:gz") as old, tarfile.open(fileobj=buffer, mode="w") as new:
        for member in old:
            data = old.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == name:
                data = data.replace(b"node-1", b"node-9")
                member.size = len(data)
            new.addfile(member, io.BytesIO(data))
    target.write_bytes(gzip.compress(buffer.getvalue()))


def check_page(page_file: Path) -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"browser part skipped: {reason}")
    with launch() as browser:
        page = browser.new_page()
        page.set_default_timeout(120_000)
        page.goto(page_file.as_uri(), wait_until="load")
        assert page.get_attribute("html", "data-js") == "ready"
        assert page.evaluate(PWNED) is None
        failing = page.locator("#t-policy tbody tr.bad")
        assert failing.count() == 1
        assert failing.locator("td").first.inner_text() == "node-2"
        assert page.locator("#t-policy tbody tr").count() == 3
        assert page.locator("#t-ready tbody tr").count() == 4
        assert page.locator("#t-ready tbody tr.bad").count() == 0
        hits = page.locator("#hunts tbody tr").all_inner_texts()
        assert sorted(text.split("\t")[0] for text in hits) == ["node-1", "node-3"]
        text = page.evaluate("document.body.textContent")
        assert EVIL_NAME.replace("\x1b", "\\x1b") in text
        assert page.locator("#queries img, #queries script").count() == 0
