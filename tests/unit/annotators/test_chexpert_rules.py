"""The `chexpert-rules` labeler: the CheXpert labeler's classic examples, aggregation rules,
SynthCXR ground truth, and equivalences (batch, cache)."""

from __future__ import annotations

import pytest

from editgrpo.annotators.chexpert import as_ordered_list, build_labeler, empty_vector
from editgrpo.annotators.chexpert_rules import RuleLabeler
from editgrpo.data.synth import SynthConfig, generate_studies
from editgrpo.text.observations import CHEXPERT_14


@pytest.fixture(scope="module")
def labeler() -> RuleLabeler:
    return RuleLabeler()


def _set(vector: dict) -> dict:
    return {name: value for name, value in vector.items() if value is not None}


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        # The CheXpert labeler's examples (issue acceptance).
        (
            "Minimal patchy airspace disease within the lingula, may reflect atelectasis or consolidation.",
            {"Lung Opacity": 1, "Consolidation": -1, "Atelectasis": -1},
        ),
        ("1. Stable mild cardiomegaly. 2. Hyperexpanded but clear lungs.", {"Cardiomegaly": 1}),
        (
            "Heart size normal and lungs are clear. No edema or pneumonia. No effusion",
            {"No Finding": 1, "Cardiomegaly": 0, "Edema": 0, "Pneumonia": 0, "Pleural Effusion": 0},
        ),
        (
            "1. Left pleural effusion with adjacent atelectasis. Right effusion is also present. "
            "2. Cardiomegaly without overt edema.",
            {"Cardiomegaly": 1, "Atelectasis": 1, "Pleural Effusion": 1, "Edema": 0},
        ),
    ],
)
def test_chexpert_labeler_examples(labeler: RuleLabeler, report: str, expected: dict) -> None:
    vector = labeler.label_one(report)
    assert {k: v for k, v in _set(vector).items() if k in expected} == expected
    if "No Finding" not in expected:
        assert vector["No Finding"] is None


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ("The heart is not enlarged.", {"Cardiomegaly": 0, "No Finding": 1}),
        ("Stable cardiac silhouette.", {"Cardiomegaly": -1}),  # stable heart size -> uncertain (METRICS.md)
        ("Small pericardial effusion.", {"No Finding": 1}),  # unmention: not a pleural effusion
        ("Cannot exclude pneumonia.", {"Pneumonia": -1}),
        ("The right pleural effusion has resolved.", {"Pleural Effusion": 0, "No Finding": 1}),
        ("No effusion. Small right effusion.", {"Pleural Effusion": 1}),  # positive beats negative
        ("Possible effusion. No effusion on the left.", {"Pleural Effusion": -1}),  # uncertain beats negative
        (
            "Findings suggest CHF.",
            {"Edema": -1, "Cardiomegaly": -1},
        ),  # heart failure -> cardiomegaly uncertain
        ("Endotracheal tube in place. Lungs are clear.", {"Support Devices": 1, "No Finding": 1}),
        ("Emphysema. No effusion.", {"Pleural Effusion": 0}),  # an other finding cancels No Finding
        ("Mild scarring or atelectasis at the left base.", {"Atelectasis": 1}),
    ],
)
def test_rules(labeler: RuleLabeler, report: str, expected: dict) -> None:
    assert _set(labeler.label_one(report)) == expected


def test_mentions_point_into_the_report(labeler: RuleLabeler) -> None:
    report = "No pneumothorax.\nMild cardiomegaly."
    mentions = labeler.mentions(report)
    assert [(m.observation, m.status, report[m.start : m.end]) for m in mentions] == [
        ("Pneumothorax", "negative", "pneumothorax"),
        ("Cardiomegaly", "positive", "cardiomegaly"),
    ]


def test_synthcxr_labels_are_read_back(labeler: RuleLabeler) -> None:
    """The SynthCXR grammar states exactly its labels; the labeler must read positives back."""
    studies = [s.study for s in generate_studies(SynthConfig(n=300, seed=7, with_priors=True), render=False)]
    wrong = []
    for study in studies:
        text = "\n".join(p for p in (study.findings, study.impression) if p)
        predicted = labeler.label_one(text)
        for name in CHEXPERT_14:
            if (study.labels.get(name) == 1) != (predicted[name] == 1):
                wrong.append((study.study_id, name, text))
    assert len(wrong) <= 3, wrong[:3]


def test_batch_cache_and_registry_agree(labeler: RuleLabeler) -> None:
    reports = ["No effusion.", "Mild cardiomegaly. Possible edema.", "", "No effusion."]
    batch = labeler.label(reports)
    assert batch == [labeler.label_one(r) for r in reports]
    assert batch == RuleLabeler(cache_size=0).label(reports)
    assert build_labeler("rules").label(reports) == batch
    assert batch[2] == {**empty_vector(), "No Finding": 1}
    assert as_ordered_list(batch[0])[9] == 0  # Pleural Effusion is index 9 in CheXbert order
    with pytest.raises(ValueError, match="valid: rules, chexbert"):
        build_labeler("negbio")


def test_phrase_file_errors(tmp_path) -> None:
    bad = tmp_path / "phrases.txt"
    bad.write_text("[Cardiomegally]\n+ cardiomegaly\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown observation\(s\) \['Cardiomegally'\]"):
        RuleLabeler(phrases=bad)
    bad.write_text("[Cardiomegaly]\n* cardiomegaly\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"phrases.txt:2: a phrase starts with \+, \? or -"):
        RuleLabeler(phrases=bad)
