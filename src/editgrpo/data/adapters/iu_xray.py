"""IU X-Ray (Open-i, Indiana University chest X-ray collection).

Layout (the Open-i release, ``NLMCXR_reports.tgz``): one XML file per report,
``ecgen-radiology/<n>.xml``, root ``<eCitation>`` with ``uId@id`` = ``CXR<n>``, the report sections in
``MedlineCitation/Article/Abstract/AbstractText@Label`` (COMPARISON, INDICATION, FINDINGS,
IMPRESSION; empty sections present without text), MeSH terms under ``MeSH/major`` and
``MeSH/automatic``, and one ``parentImage@id`` per image (``CXR1_1_IM-0001-3001``). The images come
separately (the ``NLMCXR_png`` archive), named ``<parentImage id>.png``.

Choices (the release has no such information, so they are ours):
- ``study_id`` is the ``uId`` (``CXR1``); there is no patient id or study date in the release
  (``articleDate`` is the publication date), so ``patient_id`` and ``date`` stay empty and no study
  has a prior.
- Views are not recorded per image in the XML; images get view ``UNKNOWN``.
- There is no official split. Each report is assigned by a stable hash of its ``uId`` to train /
  validate / test with ``split_fractions`` (default 0.7 / 0.1 / 0.2, the R2Gen split proportions),
  so the split does not change when reports are added or reordered.
- Without ``images`` the manifest is text-only (every report with text, no images): 3,955 reports,
  of which 28 have neither FINDINGS nor IMPRESSION and are rejected ("no findings or
  impression"; use ``--on-error skip`` to list them and go on).
"""

from __future__ import annotations

import hashlib
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from editgrpo.data.adapters.base import ProgressCallback, check_image, check_options, tracked
from editgrpo.data.manifest import DataError, RejectLog
from editgrpo.data.schema import Image, Study
from editgrpo.text.sections import ReportSections, from_openi_fields

NAME = "iu-xray"
DATASET = "iu_xray"


@dataclass(frozen=True)
class OpenIReport:
    """One parsed Open-i XML report."""

    uid: str
    source: str  # archive member or file the report came from
    iuxr_id: int | None
    sections: ReportSections
    image_ids: tuple[str, ...] = ()
    mesh_major: tuple[str, ...] = ()
    mesh_automatic: tuple[str, ...] = field(default_factory=tuple)


def _parse_xml(data: bytes, source: str) -> OpenIReport:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise ValueError(f"not well-formed XML ({err})") from None
    uid_node = root.find("uId")
    uid = uid_node.get("id") if uid_node is not None else None
    if not uid:
        raise ValueError("no uId@id")
    fields: dict[str, str | None] = {}
    for node in root.iter("AbstractText"):
        label = node.get("Label")
        if label:
            fields[label] = "".join(node.itertext()) or None
    iuxr = root.find("IUXRId")
    iuxr_id = iuxr.get("id") if iuxr is not None else None
    return OpenIReport(
        uid=uid,
        source=source,
        iuxr_id=int(iuxr_id) if iuxr_id and iuxr_id.isdigit() else None,
        sections=from_openi_fields(fields),
        image_ids=tuple(node.get("id") for node in root.findall("parentImage") if node.get("id")),
        mesh_major=tuple(n.text.strip() for n in root.findall("MeSH/major") if n.text and n.text.strip()),
        mesh_automatic=tuple(
            n.text.strip() for n in root.findall("MeSH/automatic") if n.text and n.text.strip()
        ),
    )


def _xml_sources(reports: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every ``.xml`` report in an archive or a folder, in name order."""
    if reports.is_dir():
        for path in sorted(reports.rglob("*.xml")):
            yield str(path), path.read_bytes()
        return
    if not reports.is_file():
        raise DataError(
            f"{reports}: Open-i reports not found (give NLMCXR_reports.tgz or its extracted folder)"
        )
    try:
        with tarfile.open(reports, "r:*") as archive:
            members = sorted(
                (m for m in archive.getmembers() if m.isfile() and m.name.endswith(".xml")),
                key=lambda m: m.name,
            )
            for member in members:
                handle = archive.extractfile(member)
                if handle is not None:
                    yield f"{reports}:{member.name}", handle.read()
    except tarfile.TarError as err:
        raise DataError(f"{reports}: not a readable tar archive ({err})") from None


def parse_openi(reports: str | Path, log: RejectLog | None = None) -> list[OpenIReport]:
    """Every report of an Open-i archive (``.tgz``) or folder of XML files, sorted by report number.
    Malformed XML goes to ``log`` (field ``xml``)."""
    log = log if log is not None else RejectLog("fail")
    parsed = []
    for name, data in _xml_sources(Path(reports)):
        try:
            parsed.append(_parse_xml(data, name))
        except ValueError as err:
            log.error(name, None, "xml", str(err))
    return sorted(parsed, key=lambda r: (len(r.uid), r.uid))


def assign_split(uid: str, fractions: tuple[float, float, float]) -> str:
    """Stable split from a hash of the id (independent of order and of other reports)."""
    bucket = int.from_bytes(hashlib.sha256(uid.encode("utf-8")).digest()[:8], "big") / 2**64
    train, validate, _ = fractions
    if bucket < train:
        return "train"
    return "validate" if bucket < train + validate else "test"


def prepare(
    root: str | Path,
    *,
    log: RejectLog,
    images: str | Path | None = None,
    check_images: str = "exists",
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    max_images: int | None = None,
    progress: ProgressCallback | None = None,
) -> list[Study]:
    """Studies from the Open-i reports at ``root`` (archive or folder); ``images`` is the folder
    of ``<image id>.png`` files, or None for a text-only manifest. ``progress`` (``base`` contract)
    counts the parsed reports."""
    check_options("iu_xray", check_images, max_images)
    if (
        len(split_fractions) != 3
        or any(f < 0 for f in split_fractions)
        or abs(sum(split_fractions) - 1) > 1e-6
    ):
        raise DataError(f"split_fractions {split_fractions} must be three non-negative numbers summing to 1")
    image_dir = Path(images).resolve() if images is not None else None
    if image_dir is not None and not image_dir.is_dir():
        raise DataError(f"{images}: image folder not found")
    studies = []
    for report in tracked(parse_openi(root, log), progress):
        sections = report.sections
        if not sections.findings and not sections.impression:
            log.error(report.source, None, "findings", "no findings or impression", report.uid)
            continue
        study_images: list[Image] = []
        if image_dir is not None:
            if not report.image_ids:
                log.error(
                    report.source, None, "images", "the report lists no image (parentImage)", report.uid
                )
                continue
            usable = True
            for image_id in report.image_ids:
                path = image_dir / f"{image_id}.png"
                usable = check_image(path, check_images, log, report.source, None, report.uid) and usable
                study_images.append(Image(path=str(path), view="UNKNOWN", image_id=image_id))
            if not usable:
                continue
            if max_images is not None and len(study_images) > max_images:
                log.filtered(
                    report.source,
                    None,
                    "images",
                    f"{len(study_images)} images > max_images {max_images}",
                    report.uid,
                )
                continue
        studies.append(
            Study(
                study_id=report.uid,
                dataset=DATASET,
                split=assign_split(report.uid, split_fractions),
                images=tuple(study_images),
                indication=sections.indication,
                comparison=sections.comparison,
                findings=sections.findings,
                impression=sections.impression,
                meta={
                    "iuxr_id": report.iuxr_id,
                    "mesh_major": list(report.mesh_major),
                    "mesh_automatic": list(report.mesh_automatic),
                },
            )
        )
    return sorted(studies, key=lambda s: s.study_id)
