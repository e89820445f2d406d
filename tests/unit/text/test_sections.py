"""Section extraction from MIMIC-style free text, Open-i fields and CheXpert Plus columns."""

from __future__ import annotations

import pytest

from editgrpo.text.sections import (
    canonical_header,
    from_chexpert_plus,
    from_openi_fields,
    normalise_body,
    parse_free_text,
)

# Written for this test in the layout of a MIMIC-CXR report (not real report text).
MIMIC_STYLE = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ year old woman with cough  // eval for pneumonia

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  ___

 FINDINGS:

 The heart size is mildly enlarged.  There is a small left pleural
 effusion with adjacent atelectasis.  No pneumothorax.

 IMPRESSION:

 1. Small left pleural effusion.
 2. Mild cardiomegaly.
"""


def test_mimic_style_report() -> None:
    sections = parse_free_text(MIMIC_STYLE)
    assert sections.preamble == "FINAL REPORT"
    # EXAMINATION and TECHNIQUE both map to technique, concatenated in order.
    assert sections.technique == "CHEST (PA AND LAT)\nChest PA and lateral"
    assert sections.indication == "___ year old woman with cough // eval for pneumonia"
    assert sections.comparison == "___"
    assert sections.findings == (
        "The heart size is mildly enlarged. There is a small left pleural effusion with adjacent "
        "atelectasis. No pneumothorax."
    )
    assert sections.impression == "1. Small left pleural effusion.\n2. Mild cardiomegaly."
    assert sections.history is None


def test_examination_and_technique_are_concatenated_in_order() -> None:
    sections = parse_free_text("EXAMINATION: CHEST (PA AND LAT)\nTECHNIQUE: PA and lateral\n")
    assert sections.technique == "CHEST (PA AND LAT)\nPA and lateral"


def test_header_variants() -> None:
    assert canonical_header("Findings and  Impression") == "findings"
    assert canonical_header("CONCLUSION") == "impression"
    assert canonical_header("REASON FOR EXAMINATION") == "indication"
    assert canonical_header("CLINICAL HISTORY") == "history"
    assert canonical_header("WET READ") is None


def test_combined_and_unknown_headers_are_kept_under_other() -> None:
    report = "FINDINGS AND IMPRESSION: No acute process.\nWET READ: ___ 10:30 PM\nlines ok"
    sections = parse_free_text(report)
    assert sections.findings == "No acute process."
    assert sections.impression is None
    assert sections.other == {
        "FINDINGS AND IMPRESSION": "No acute process.",
        "WET READ": "___ 10:30 PM lines ok",
    }


def test_empty_sections_are_none() -> None:
    sections = parse_free_text("FINDINGS:\n\nIMPRESSION: Normal chest.")
    assert sections.findings is None and sections.impression == "Normal chest."
    with pytest.raises(KeyError, match="valid: findings, impression"):
        sections.get("summary")


def test_normalise_body() -> None:
    assert normalise_body("  a wrapped\n  line.\n\nNext   para.\n1. item\n- bullet") == (
        "a wrapped line.\nNext para.\n1. item\n- bullet"
    )
    assert normalise_body(" \n ") is None
    assert normalise_body(None) is None


def test_openi_fields() -> None:
    sections = from_openi_fields(
        {
            "COMPARISON": "None.",
            "INDICATION": "XXXX-year-old male, chest pain.",
            "FINDINGS": None,
            "IMPRESSION": "No acute disease.",
        }
    )
    assert (sections.comparison, sections.indication) == ("None.", "XXXX-year-old male, chest pain.")
    assert sections.findings is None and sections.impression == "No acute disease."


def test_chexpert_plus_columns() -> None:
    row = {
        "path_to_image": "train/patient00001/study1/view1_frontal.jpg",
        "section_findings": "Lungs are clear.",
        "section_impression": "nan",
        "section_clinical_history": "Shortness of breath.",
        "section_summary": "Normal.",
        "section_comparison": "",
    }
    sections = from_chexpert_plus(row)
    assert sections.findings == "Lungs are clear." and sections.impression is None
    assert sections.indication == "Shortness of breath." and sections.comparison is None
    assert sections.other == {"summary": "Normal."}
