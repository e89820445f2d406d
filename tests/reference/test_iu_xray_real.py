"""The real Open-i archive from the team's shared folder (read at test time, never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

from editgrpo.data.adapters.iu_xray import parse_openi, prepare
from editgrpo.data.manifest import RejectLog
from editgrpo.text.sentences import split_sentences

ARCHIVE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "iu_xray" / "NLMCXR_reports.tgz"
pytestmark = pytest.mark.skipif(
    not ARCHIVE.is_file(), reason=f"real IU X-Ray reports not present at {ARCHIVE}"
)


@pytest.fixture(scope="module")
def reports():
    return parse_openi(ARCHIVE)


def test_counts_match_the_attribution_file(reports) -> None:
    # ../shared/data/iu_xray/ATTRIBUTION.md: 3,955 reports, 7,470 image references, 1,855 with XXXX,
    # 3,419 with both FINDINGS and IMPRESSION. (The XXXX count is over FINDINGS and IMPRESSION; with
    # INDICATION and COMPARISON it would be 3,411.)
    assert len(reports) == 3955
    assert sum(len(r.image_ids) for r in reports) == 7470
    assert sum(bool(r.sections.findings and r.sections.impression) for r in reports) == 3419
    with_token = sum(
        any("XXXX" in (getattr(r.sections, f) or "") for f in ("findings", "impression")) for r in reports
    )
    assert with_token == 1855


def test_text_only_manifest_keeps_every_report_with_text(reports) -> None:
    log = RejectLog("skip")
    studies = prepare(ARCHIVE, log=log)
    assert len(studies) + len(log.rejects) == 3955
    assert len(log.rejects) == sum(not (r.sections.findings or r.sections.impression) for r in reports) == 28


def test_every_findings_section_splits_losslessly(reports) -> None:
    for report in reports:
        text = report.sections.findings or ""
        sentences = split_sentences(text)
        assert "".join(s.text for s in sentences).replace(" ", "") == text.replace(" ", "").replace("\n", "")
