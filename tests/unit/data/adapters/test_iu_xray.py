"""IU X-Ray (Open-i) adapter on a fixture archive the test writes in the release's XML layout."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from editgrpo.data.adapters.iu_xray import assign_split, parse_openi, prepare
from editgrpo.data.manifest import DataError, RejectLog
from fixtures.openi import write_archive, write_images


def test_parse_keeps_every_report_with_sections_images_and_mesh(tmp_path: Path) -> None:
    reports = parse_openi(write_archive(tmp_path / "r.tgz"))
    assert [r.uid for r in reports] == ["CXR1", "CXR2", "CXR3", "CXR4"]
    first = reports[0]
    assert first.sections.findings == "Heart size normal. Lungs clear."
    assert (first.sections.indication, first.sections.comparison) == ("Cough", "None.")
    assert first.image_ids == ("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001")
    assert reports[2].mesh_major == ("Pleural Effusion/right",)
    assert reports[1].sections.findings is None  # empty section present without text


def test_folder_and_archive_agree(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "r.tgz")
    folder = tmp_path / "x"
    with tarfile.open(archive) as t:
        t.extractall(folder, filter="data")
    assert [r.sections for r in parse_openi(folder)] == [r.sections for r in parse_openi(archive)]


def test_text_only_manifest(tmp_path: Path) -> None:
    log = RejectLog("skip")
    studies = prepare(write_archive(tmp_path / "r.tgz"), log=log)
    assert [s.study_id for s in studies] == ["CXR1", "CXR2", "CXR3"]
    assert all(s.images == () and s.dataset == "iu_xray" for s in studies)
    assert studies[1].findings is None and studies[1].impression == "No acute disease."
    assert [(r.record_id, r.field, r.reason) for r in log.rejects] == [
        ("CXR4", "findings", "no findings or impression")
    ]
    with pytest.raises(DataError, match=r"\[CXR4\]: findings: no findings or impression"):
        prepare(write_archive(tmp_path / "r2.tgz"), log=RejectLog("fail"))


def test_with_images_missing_unreadable_and_limits(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "r.tgz")
    images = write_images(
        tmp_path / "png",
        ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_IM-0652-1001"],
        garbage=("CXR2_IM-0652-1001",),
    )
    log = RejectLog("skip")
    studies = prepare(archive, log=log, images=images, check_images="open")
    assert [s.study_id for s in studies] == ["CXR1"]
    assert [Path(i.path).name for i in studies[0].images] == [
        "CXR1_1_IM-0001-3001.png",
        "CXR1_1_IM-0001-4001.png",
    ]
    assert all(Path(i.path).is_absolute() and i.view == "UNKNOWN" for i in studies[0].images)
    reasons = {(r.record_id, r.field): r.reason for r in log.rejects}
    assert reasons[("CXR2", "image")].startswith(f"unreadable image {images}/CXR2_IM-0652-1001.png")
    assert reasons[("CXR3", "images")] == "the report lists no image (parentImage)"
    assert reasons[("CXR4", "findings")] == "no findings or impression"
    # "exists" does not open files, so the garbage PNG passes; a missing file does not.
    (images / "CXR1_1_IM-0001-4001.png").unlink()
    log = RejectLog("skip")
    studies = prepare(archive, log=log, images=images, check_images="exists")
    assert [s.study_id for s in studies] == ["CXR2"]
    assert any(r.reason == f"missing image file {images}/CXR1_1_IM-0001-4001.png" for r in log.rejects)
    write_images(images, ["CXR1_1_IM-0001-4001"])
    log = RejectLog("skip")
    assert [s.study_id for s in prepare(archive, log=log, images=images, max_images=1)] == ["CXR2"]
    assert ("filtered", "2 images > max_images 1") in {(r.kind, r.reason) for r in log.rejects}


def test_broken_xml_and_missing_inputs(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "r.tgz", broken=True)
    with pytest.raises(DataError, match=r"99\.xml: xml: not well-formed XML"):
        prepare(archive, log=RejectLog("fail"))
    with pytest.raises(DataError, match="Open-i reports not found"):
        prepare(tmp_path / "nope.tgz", log=RejectLog("fail"))
    with pytest.raises(DataError, match="image folder not found"):
        prepare(archive, log=RejectLog("skip"), images=tmp_path / "nope")
    with pytest.raises(DataError, match="must be three non-negative numbers summing to 1"):
        prepare(archive, log=RejectLog("skip"), split_fractions=(0.5, 0.5, 0.5))


def test_split_is_stable_and_proportional() -> None:
    fractions = (0.7, 0.1, 0.2)
    splits = [assign_split(f"CXR{n}", fractions) for n in range(5000)]
    assert splits == [assign_split(f"CXR{n}", fractions) for n in range(5000)]
    share = {name: splits.count(name) / len(splits) for name in ("train", "validate", "test")}
    assert (
        abs(share["train"] - 0.7) < 0.03
        and abs(share["validate"] - 0.1) < 0.02
        and abs(share["test"] - 0.2) < 0.03
    )


def test_progress_counts_every_report_through_the_loop(tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    log = RejectLog("skip")
    studies = prepare(
        write_archive(tmp_path / "r.tgz"), log=log, progress=lambda done, total: calls.append((done, total))
    )
    # Four reports go through the loop: three kept, CXR4 rejected (no findings or impression).
    assert (len(studies), [r.record_id for r in log.rejects]) == (3, ["CXR4"])
    dones = [done for done, _ in calls]
    assert dones == sorted(dones), calls  # done never decreases
    assert calls[0] == (0, 4) and calls[-1] == (4, 4), calls
    assert {total for _, total in calls} == {4}  # the total is known from the start
