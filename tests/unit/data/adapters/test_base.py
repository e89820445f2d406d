"""Shared adapter helpers, on hand-made values."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from editgrpo.data.adapters.base import (
    MissingColumnsError,
    check_image,
    check_options,
    clean_cell,
    dicom_date,
    latest_earlier,
    read_csv_records,
    tracked,
    with_priors,
)
from editgrpo.data.manifest import RejectLog
from editgrpo.data.schema import Study
from editgrpo.errors import UserError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20190131", "2019-01-31"),
        (20190131, "2019-01-31"),
        (20190131.0, "2019-01-31"),
        ("20190131.0", "2019-01-31"),
        ("2019-01-31", "2019-01-31"),
        (None, None),
        (float("nan"), None),
        ("  ", None),
    ],
)
def test_dicom_date(value, expected) -> None:
    assert dicom_date(value) == expected


@pytest.mark.parametrize("value", ["20191331", "2019013", 20190131.5, "31/01/2019", True])
def test_dicom_date_rejects(value) -> None:
    with pytest.raises(ValueError):
        dicom_date(value)


def test_clean_cell() -> None:
    assert [clean_cell(v) for v in (" a ", "NaN", "null", "None", "", None, float("nan"), 3)] == [
        "a",
        None,
        None,
        None,
        None,
        None,
        None,
        "3",
    ]


def _study(study_id: str) -> Study:
    return Study(study_id=study_id, dataset="t", split="train")


def test_latest_earlier_and_with_priors() -> None:
    # Patient p: ranks 1, 2, 2, 5 -> s2 and s3 (same rank) both get s1, s4 gets the later of s2/s3 (s3).
    entries = [(_study("s4"), "p", 5), (_study("s2"), "p", 2), (_study("s1"), "p", 1), (_study("s3"), "p", 2)]
    entries.append((_study("q1"), "q", 0))
    previous = latest_earlier(entries)
    assert {k: v.study_id for k, v in previous.items()} == {"s2": "s1", "s3": "s1", "s4": "s3"}
    studies = with_priors(entries)
    assert [s.study_id for s in studies] == ["q1", "s1", "s2", "s3", "s4"]
    assert [s.prior.study_id if s.prior else None for s in studies] == [None, None, "s1", "s1", "s3"]


def test_read_csv_records_lines_gzip_and_errors(tmp_path: Path) -> None:
    text = 'a,b\n1,"two\nlines"\n\n3\n4,5\n'
    plain = tmp_path / "t.csv"
    plain.write_text(text, encoding="utf-8")
    packed = tmp_path / "t.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        log = RejectLog("skip")
        rows = list(read_csv_records(path, ("a", "b"), log))
        assert rows == [(2, {"a": "1", "b": "two\nlines"}), (6, {"a": "4", "b": "5"})]
        assert [(r.line, r.field) for r in log.rejects] == [(5, "(row)")]
    with pytest.raises(MissingColumnsError, match=r"missing required column\(s\) c"):
        list(read_csv_records(plain, ("a", "c"), RejectLog("skip")))


def test_option_checks(tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match="demo option check_images: 'always' is not one of none, exists, open"
    ):
        check_options("demo", "always", None)
    with pytest.raises(UserError, match="demo option max_images: 0 must be a positive integer or None"):
        check_options("demo", "exists", 0)
    with pytest.raises(UserError, match="check_images: 'maybe' is not one of"):
        check_image(tmp_path / "x.png", "maybe", RejectLog("skip"), "src", 1, "r")


def test_tracked_reports_at_the_start_every_n_and_at_the_end() -> None:
    calls: list[tuple[int, int | None]] = []

    def record(done: int, total: int | None) -> None:
        calls.append((done, total))

    assert list(tracked(range(600), record)) == list(range(600))
    assert calls == [(0, 600), (256, 600), (512, 600), (600, 600)]
    # A total it cannot know (a generator) is None until the end; an exact multiple of ``every``
    # is reported once more at the end.
    calls.clear()
    assert list(tracked((n for n in range(4)), record, every=2)) == [0, 1, 2, 3]
    assert calls == [(0, None), (2, None), (4, None), (4, 4)]
    calls.clear()
    assert list(tracked([], record)) == [] and calls == [(0, 0), (0, 0)]
    # An item counts once the loop asks for the next one; a loop that raises gets no final call.
    calls.clear()
    with pytest.raises(ValueError, match="stop"):
        for item in tracked(range(5), record, every=2):
            if item == 3:
                raise ValueError("stop")
    assert calls == [(0, 5), (2, 5)]
    # Without a callback the items pass through as they are.
    items = iter("ab")
    assert list(tracked(items, None)) == ["a", "b"]
