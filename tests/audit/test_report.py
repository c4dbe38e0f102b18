"""The HTML report as text: self-contained, escaped, every finding with its evidence and
remedy, scores that trace to findings, charts from the assessment's data."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from audit.report_sample import HOSTILE, sample_assessment
from audit.scenario import Org
from smimekit.audit.model import Assessment
from smimekit.audit.report import archive_chart, coverage_chart, expiry_chart, render_html
from smimekit.errors import MalformedError


class _Collect(HTMLParser):
    """Tags, attributes and text as the browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Collect:
    parser = _Collect()
    parser.feed(html)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def html() -> str:
    return render_html(sample_assessment())


def test_certificate_name_with_markup_is_shown_as_text(html: str) -> None:
    page = parse(html)
    assert [t for t, _a in page.tags if t in ("script", "img", "iframe", "object")] == []
    assert not any(k.startswith("on") for _t, attrs in page.tags for k in attrs)
    text = "".join(page.text)
    # Once in the evidence, once in the department label, table and chart descriptions.
    assert f"CN={HOSTILE}, O=Outside CA" in text
    assert f"R&D {HOSTILE}" in text
    assert "&lt;script&gt;" in html


def test_organisation_name_with_markup_is_escaped_in_title_and_heading() -> None:
    import dataclasses

    html = render_html(dataclasses.replace(sample_assessment(), organisation=HOSTILE))
    page = parse(html)
    assert [t for t, _a in page.tags if t in ("script", "img")] == []
    assert html.count(f"Sovereignty assessment: {HOSTILE}") == 0
    assert "".join(page.text).count(f"Sovereignty assessment: {HOSTILE}") == 2


def test_report_is_self_contained(html: str) -> None:
    page = parse(html)
    for tag, attrs in page.tags:
        for name in ("src", "href", "xlink:href", "action", "data"):
            value = attrs.get(name)
            if value is not None:
                assert tag == "a" and name == "href" and value.startswith("#"), (tag, attrs)
    assert "@import" not in html and "url(" not in html
    csp = [a["content"] for t, a in page.tags
           if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "script-src" not in csp[0]


def test_every_finding_with_evidence_remedy_and_points(html: str) -> None:
    assessment = sample_assessment()
    text = " ".join("".join(parse(html).text).split())
    for f in assessment.findings:
        assert f'id="f-{f.id}"' in html
        for line in f.evidence:
            assert " ".join(line.split()) in text
        if not f.passed:
            assert f.remedy in text
        if f.weight:
            assert f"{f.points} / {f.weight}" in text


def test_domain_scores_trace_to_findings(html: str) -> None:
    scores = sample_assessment().scores()
    # DPS: 10 + 0 + 2 + 3 of 30; IAT: 8 + 4 + 10 of 25.
    assert (scores["DPS"].points, scores["DPS"].maximum) == (15, 30)
    assert (scores["IAT"].points, scores["IAT"].maximum) == (22, 25)
    text = " ".join("".join(parse(html).text).split())
    assert "Data Protection and Sovereignty (DPS): 50%" in text
    assert "Identity, Access and Trust (IAT): 88%" in text
    assert "15 of 30 points" in text and "22 of 25 points" in text


def test_failed_findings_ordered_by_severity_first(html: str) -> None:
    fix_first = html[html.index("What to fix first"):html.index('id="h-charts"')]
    order = re.findall(r'href="#f-([A-Z0-9-]+)"', fix_first)
    assert order == ["DPS-ESCROW-THRESHOLD", "DPS-OUTSIDE-CA", "IAT-COVERAGE",
                     "DPS-ARCHIVE-WEAK", "IAT-EXPIRING-30"]
    assert "At least one critical finding failed" in html


def test_three_charts_with_titles_and_descriptions(html: str) -> None:
    page = parse(html)
    svgs = [a for t, a in page.tags if t == "svg"]
    assert len(svgs) == 3
    for attrs in svgs:
        assert attrs["role"] == "img"
        title_id, desc_id = (attrs["aria-labelledby"] or "").split()
        assert f'<title id="{title_id}">' in html and f'<desc id="{desc_id}">' in html
    rects = [a for t, a in page.tags if t == "rect"]
    assert {a["class"] for a in rects} == {"exp", "sig", "enc", "ok", "escrow", "lost",
                                           "weak"}
    assert all(float(a["width"] or 0) >= 0 and float(a["height"] or 0) >= 0 for a in rects)


def test_drill_steps_in_report(html: str) -> None:
    text = " ".join("".join(parse(html).text).split())
    assert "Isolation: network namespace (loopback only)." in text
    assert "2 of 3 operation(s) worked" in text
    assert "escrow recover needs 2 shares, 1 given" in text


def test_no_drill_and_no_chart_data_said_plainly() -> None:
    html = render_html(sample_assessment(drill=False, charts=False))
    assert "No drill has been run" in html
    assert html.count("No data for this chart") == 3
    assert "<svg" not in html


def test_report_without_findings_renders() -> None:
    import datetime as dt
    empty = Assessment(generated=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                       organisation="Nobody", findings=())
    html = render_html(empty)
    assert "No critical finding failed" in html
    assert html.count("No finding in this domain") == 2


def test_expiry_bars_scale_to_the_busiest_week() -> None:
    chart = expiry_chart({"2026-12-07": 2, "2026-12-14": 4, "2026-12-21": 0})
    heights = [bar.height for bar in chart.bars]
    assert heights[1] == pytest.approx(2 * heights[0]) and heights[2] == 0
    assert chart.table[1:] == (("2026-12-07", "2"), ("2026-12-14", "4"), ("2026-12-21", "0"))


def test_coverage_bars_are_shares_of_mailboxes() -> None:
    chart = coverage_chart({"A": {"mailboxes": 4, "signing": 4, "encryption": 1}})
    full, quarter = (bar.width for bar in chart.bars)
    assert quarter == pytest.approx(full / 4)
    assert "1 of 4 mailboxes with a valid encryption certificate (25%)" in chart.bars[1].title


def test_archive_bars_readability_then_each_weakness() -> None:
    chart = archive_chart({"now": 10, "escrow": 5, "lost": 0,
                           "weak": {"rsa-under-2048": 1, "rc2": 2}})
    assert [row[0] for row in chart.table[1:]] == [
        "readable now", "only via escrow", "lost", "weak: RC2", "weak: RSA < 2048"]
    assert chart.bars[0].width == pytest.approx(2 * chart.bars[1].width)
    assert chart.bars[2].width == 0


@pytest.mark.parametrize(("make", "data", "message"), [
    (expiry_chart, [{"week": "next week", "count": 1}], "not a date"),
    (expiry_chart, [{"week": "2026-12-07", "count": -1}], "whole numbers"),
    (expiry_chart, [{"count": 1}], "without 'week'"),
    (coverage_chart, [{"department": "A", "mailboxes": 1, "signing": 2, "encryption": 0}],
     "more certificates than mailboxes"),
    (coverage_chart, "Finance", "a list or a mapping"),
    (archive_chart, {"now": "many"}, "whole numbers"),
    (archive_chart, {"now": 1, "weak": 3}, "'weak' maps a weakness to a count"),
    (archive_chart, [1, 2], "a mapping of counts"),
])
def test_malformed_chart_data_is_a_clear_error(make, data, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MalformedError, match=message):
        make(data)


def test_healthy_scenario_report_has_no_critical_and_its_drill(healthy: Org) -> None:
    assessment = healthy.assess()
    html = render_html(assessment)
    text = " ".join("".join(parse(html).text).split())
    assert not assessment.critical and "No critical finding failed." in text
    assert assessment.drill is not None
    assert f"Isolation: {assessment.drill.isolation}." in text
    for step in assessment.drill.steps:
        assert f'<th scope="row">{step.name}</th>' in html
    for domain, score in assessment.scores().items():
        assert f"{score.points} of {score.maximum} points" in text, domain
