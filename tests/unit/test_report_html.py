"""The report page: self-contained, locked down by its CSP, every host value shown as text."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fleetkit.foundation.status import ConfigError, ExitStatus, exit_status_for
from fleetkit.report.html import (
    coverage_segments,
    is_flat,
    render_html,
    sparkline_path,
    visible,
    write_report,
)
from fleetkit.report.model import (
    Coverage,
    FleetReport,
    PolicyCell,
    PolicyMatrix,
    PolicyStatus,
    QueryRun,
)
from fleetkit.report.samples import lab_sample, large_fleet
from tests.browser.hostile import ATTACKS, INVISIBLE, hostile_report

P, F, U, E = PolicyStatus.PASS, PolicyStatus.FAIL, PolicyStatus.UNKNOWN, PolicyStatus.ERROR
NOW = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)

#: Every element the report itself writes; anything else would be injected markup.
OUR_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "p", "nav", "a", "main",
    "section", "h2", "h3", "code", "div", "input", "label", "span", "table", "thead", "tbody",
    "tr", "th", "td", "ul", "li", "b", "svg", "rect", "path", "i", "small", "article", "details",
    "summary", "pre", "footer", "script", "wbr",
}  # fmt: skip


class Elements(HTMLParser):
    """Every start tag with its attributes, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

        self._raw_text = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._raw_text = tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._raw_text = False

    def handle_data(self, data: str) -> None:
        if not self._raw_text:
            self.text.append(data)

    def words(self) -> str:
        """The page's text as a person reads it (whitespace collapsed)."""
        return " ".join(" ".join(self.text).split())


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    parser.close()
    return parser


def csp_of(page: str) -> str:
    match = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert match, "no Content-Security-Policy meta tag"
    return html.unescape(match.group(1))


def sha256_source(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# --------------------------------------------------------------------------- self-contained


def test_the_csp_allows_only_the_reports_own_style_and_script_by_hash() -> None:
    page = render_html(lab_sample())
    csp = csp_of(page)
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    script = re.search(r"<script>(.*?)</script>", page, re.S)
    assert style and script
    assert "default-src 'none'" in csp
    assert f"style-src {sha256_source(style.group(1))};" in csp
    assert f"script-src {sha256_source(script.group(1))};" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp
    # The CSP comes before anything it must govern.
    assert page.index("Content-Security-Policy") < page.index("<style>")


def test_the_page_loads_nothing_and_links_only_inside_itself() -> None:
    page = render_html(lab_sample())
    for tag, attrs in parse(page).tags:
        assert "src" not in attrs, tag
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "style" not in attrs, (tag, attrs)  # blocked by the CSP anyway
        if "href" in attrs:
            assert (attrs["href"] or "").startswith("#"), attrs
    assert "http://" not in page and "https://" not in page and "@import" not in page


def test_write_report_writes_the_page_whole(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    size = write_report(target, lab_sample())
    assert target.read_bytes() == render_html(lab_sample()).encode()
    assert size == target.stat().st_size
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_an_unwritable_report_path_is_bad_input_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "report.html"
    with pytest.raises(ConfigError, match="cannot write") as error:
        write_report(target, lab_sample())
    assert exit_status_for(error.value) is ExitStatus.BAD_INPUT
    assert str(target) in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_the_same_model_renders_the_same_page() -> None:
    assert render_html(lab_sample()) == render_html(lab_sample())


# --------------------------------------------------------------------------- hostile values


def test_hostile_values_add_no_element_and_no_attribute() -> None:
    page = render_html(hostile_report())
    elements = parse(page)
    tags = [tag for tag, _ in elements.tags]
    assert set(tags) <= OUR_TAGS
    assert tags.count("script") == 1 and tags.count("style") == 1
    assert "img" not in tags and "iframe" not in tags
    for _, attrs in elements.tags:
        assert not any(name.startswith("on") for name in attrs), attrs
        assert "src" not in attrs
        for value in attrs.values():
            assert "javascript:" not in (value or "")


@pytest.mark.parametrize("attack", ATTACKS)
def test_each_attack_is_shown_as_its_own_text(attack: str) -> None:
    page = render_html(hostile_report())
    if any(c in attack for c in "<>&\"'"):
        assert attack not in page  # never raw
    text = "".join(parse(page).text)
    assert attack in text  # but readable, exactly, where a person looks


@pytest.mark.parametrize(("raw", "shown"), INVISIBLE.items())
def test_control_and_invisible_characters_are_shown_as_escapes(raw: str, shown: str) -> None:
    page = render_html(hostile_report())
    assert raw not in page
    assert shown in "".join(parse(page).text)
    page.encode("utf-8")  # lone surrogates made visible, so the page can be written


def test_visible_escapes_like_the_terminal_and_handles_surrogates() -> None:
    assert visible("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert visible("x\udc80") == "x\\udc80"
    assert visible("line\nbreak") == "line\\nbreak"
    assert visible("line\nbreak", keep_newlines=True) == "line\nbreak"


def test_long_host_values_are_cut_with_a_note() -> None:
    model = FleetReport(
        NOW,
        "0.1.0",
        queries=(
            QueryRun.from_records(
                "r1", NOW, "SELECT 1", Coverage(with_rows=1), [{"hostname": "h", "v": "x" * 5000}]
            ),
        ),
    )
    page = render_html(model)
    assert "x" * 5000 not in page
    assert "(4,700 more characters)" in page


# --------------------------------------------------------------------------- content


def test_lab_report_shows_the_story() -> None:
    page = render_html(lab_sample())
    text = parse(page).words()
    assert "3 / 4 hosts ready" in text
    assert "1 host failing a policy (3 × 2 policies)" in text
    assert "2 hosts with hunt hits in 1 hunt" in text
    assert "1 host quarantined" in text
    assert "since 2026-11-24" in text  # node-2 fails the SSH-key policy since then
    assert "2 hits on 2 hosts" in text
    assert "6 rows" in text
    # Failing hosts come first, marked.
    assert re.search(r'<tr class="bad"><td>node-2</td><td class="num" data-k="2">', page)
    assert re.search(r'<tr class="bad"><td>node-3</td><td>compute</td>', page)


def test_query_rows_are_capped_with_a_count_of_the_rest() -> None:
    records = ({"nodeID": f"n{i}", "hostname": f"h{i}", "pid": str(i)} for i in range(1234))
    run = QueryRun.from_records("run-9", NOW, "SELECT pid FROM processes", Coverage(1), records)
    page = render_html(FleetReport(NOW, "0.1.0", queries=(run,)))
    assert "1,234 rows" in page
    assert "1,214 more rows" in page
    assert page.count("<td>h") == 20


def test_an_empty_history_says_so() -> None:
    page = render_html(FleetReport(NOW, "0.1.0", since=NOW - timedelta(days=7)))
    assert "No history yet" in page
    assert "No policy run recorded in this period." in page


def test_a_thousand_host_fleet_fits_in_five_megabytes() -> None:
    model = large_fleet(1000, 20, 30)
    page = render_html(model)
    assert len(page.encode("utf-8")) < 5_000_000
    assert page.count("<tr") >= 1000 + 1000 + 30
    assert ' class="sortable m lazy"' in page  # only rows on screen are laid out


# --------------------------------------------------------------------------- trends and bars


def test_sparkline_draws_only_changes() -> None:
    assert sparkline_path((P,) * 20 + (F,) * 10, 30) == "M0 7H20V1H30"
    assert sparkline_path((P, P, None, F), 4) == "M0 7H2M3 1H4"
    assert sparkline_path((F, F), 5) == "M3 1H5"  # a short history sits at the right end
    assert sparkline_path((None, None), 2) == ""
    assert sparkline_path((U, E), 2) == "M0 5H1V3H2"


def test_flat_trends_are_only_full_unchanging_ones() -> None:
    assert is_flat((P, P, P), 3)
    assert not is_flat((P, P), 3)
    assert not is_flat((P, F, P), 3)
    assert not is_flat((None, None, None), 3)


def test_coverage_bar_segments_fill_the_bar_in_order() -> None:
    segments = coverage_segments(Coverage(with_rows=6, empty=2, timed_out=1, missing=1))
    assert [s.label for s in segments] == ["rows", "empty", "timed out", "missing"]
    assert segments[0].x == 0
    assert abs(sum(s.width for s in segments) - 100) < 0.05
    assert coverage_segments(Coverage()) == ()


def test_matrix_cells_show_status_since_and_trend() -> None:
    cell = PolicyCell(F, NOW - timedelta(days=2), (P, P, F))
    matrix = PolicyMatrix.from_cells({("web-1", "p/x"): cell}, runs=("a", "b", "c"))
    page = render_html(FleetReport(NOW, "0.1.0", policies=matrix))
    assert '<td class="f">FAIL<svg viewBox="0 0 3 8" preserveAspectRatio="none">' in page
    assert '<path d="M0 7H2V1H3"/>' in page
    assert "<small>since 2026-11-25</small>" in page
