"""Training label frequencies (freqs.json): recovered on SynthCXR, cached, and checked when loaded."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from editgrpo.data.manifest import write_manifest
from editgrpo.data.synth import FINDING_LABELS, SynthConfig, generate_studies, truth_of
from editgrpo.errors import UserError
from editgrpo.eval.label_stats import label_stats
from editgrpo.rewards.label_freqs import load_label_freqs
from editgrpo.text.observations import CHEXPERT_14

N = 5000


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthConfig, list]:
    # render=False: reports and labels only (5,000 studies in well under a second).
    config = SynthConfig(n=N, seed=0)
    studies = [s.study for s in generate_studies(config, render=False)]
    manifest = tmp_path_factory.mktemp("synth") / "train.jsonl"
    write_manifest(manifest, studies)
    return manifest, config, studies


def test_prevalences_are_recovered_on_5000_synthcxr_studies(synth, tmp_path: Path) -> None:
    manifest, config, studies = synth
    calls: list[tuple[int, int]] = []
    result = label_stats(manifest, tmp_path / "freqs.json", progress=lambda d, t: calls.append((d, t)))
    written = json.loads((tmp_path / "freqs.json").read_text())
    assert written["n"] == N and written["labeler"] == "rules" and written["uncertain_as"] == "positive"
    assert written["section"] == "findings_impression" and written["manifest"] == str(manifest)
    assert set(written["labels"]) == set(CHEXPERT_14) == set(written["counts"])
    assert written["labels"] == {name: written["counts"][name] / N for name in CHEXPERT_14}
    assert result["labels"] == written["labels"] and calls[-1][0] == calls[-1][1]
    truth = Counter(finding for study in studies for finding in truth_of(study).present)
    for finding, label in FINDING_LABELS.items():
        recovered = written["labels"][label]
        # The labeler reads back what the reports say: within 1 point of the sampled truth ...
        assert abs(recovered - truth[finding] / N) <= 0.01, (label, recovered, truth[finding] / N)
        # ... and of the configured prevalence (sampling noise at N = 5,000: sd <= 0.46 points).
        assert abs(recovered - config.prevalence[finding]) <= 0.01, (label, recovered)
    # SynthCXR never mentions these.
    assert written["labels"]["Pneumonia"] == written["labels"]["Pleural Other"] == 0.0


def test_the_cache_makes_a_rerun_label_nothing(synth, tmp_path: Path) -> None:
    manifest, _, _ = synth
    cache = tmp_path / "labels.cache.jsonl"
    first = label_stats(manifest, tmp_path / "a.json", cache=cache)
    distinct = len({s.section("findings_impression") for s in synth[2]})
    assert first["labelled"] == distinct and first["cache_hits"] == 0
    assert len(cache.read_text().splitlines()) == distinct
    second = label_stats(manifest, tmp_path / "b.json", cache=cache)
    assert second["labelled"] == 0 and second["cache_hits"] == distinct
    assert second["labels"] == first["labels"]
    # The raw 4-class labels are cached: the other uncertain convention also labels nothing.
    third = label_stats(manifest, tmp_path / "c.json", cache=cache, uncertain_as="negative")
    assert third["labelled"] == 0 and third["uncertain_as"] == "negative"


def test_uncertain_convention_by_hand(tmp_path: Path) -> None:
    from editgrpo.data.schema import Study

    texts = ["Possible small left pleural effusion.", "Small left pleural effusion.", "No pleural effusion."]
    studies = [Study(study_id=f"s{i}", dataset="t", split="train", findings=t) for i, t in enumerate(texts)]
    write_manifest(tmp_path / "m.jsonl", studies)
    positive = label_stats(tmp_path / "m.jsonl", tmp_path / "p.json")
    negative = label_stats(tmp_path / "m.jsonl", tmp_path / "n.json", uncertain_as="negative")
    # Uncertain + positive + negative: 2 of 3 positive with uncertain -> positive, 1 of 3 otherwise.
    assert positive["counts"]["Pleural Effusion"] == 2 and positive["labels"]["Pleural Effusion"] == 2 / 3
    assert negative["counts"]["Pleural Effusion"] == 1 and negative["n"] == 3


def _freqs(tmp_path: Path, **changes) -> Path:
    data = {
        "labels": dict.fromkeys(CHEXPERT_14, 0.1),
        "counts": dict.fromkeys(CHEXPERT_14, 1),
        "n": 10,
        "labeler": "rules",
        "uncertain_as": "positive",
        "manifest": "train.jsonl",
        "section": "findings_impression",
        **changes,
    }
    path = tmp_path / "freqs.json"
    path.write_text(json.dumps(data))
    return path


def test_loader_reads_a_good_file(tmp_path: Path) -> None:
    loaded = load_label_freqs(_freqs(tmp_path), labeler="rules", uncertain_as="positive")
    assert loaded["labels"] == dict.fromkeys(CHEXPERT_14, 0.1)


def test_loader_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing\.json: label frequencies file not found.*label-stats"):
        load_label_freqs(tmp_path / "missing.json")
    bad = tmp_path / "freqs.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match=r"freqs\.json: is not valid JSON"):
        load_label_freqs(bad)
    thirteen = dict.fromkeys(CHEXPERT_14[:-1], 0.1)
    with pytest.raises(UserError, match=r"14 CheXpert observations, got 13 labels; missing \['No Finding'\]"):
        load_label_freqs(_freqs(tmp_path, labels=thirteen))
    with pytest.raises(UserError, match=r"numbers in \[0, 1\], got \{'Edema': 1.5\}"):
        load_label_freqs(_freqs(tmp_path, labels={**dict.fromkeys(CHEXPERT_14, 0.1), "Edema": 1.5}))
    with pytest.raises(UserError, match="made with labeler='chexbert' but the reward uses labeler='rules'"):
        load_label_freqs(_freqs(tmp_path, labeler="chexbert"), labeler="rules")
    with pytest.raises(UserError, match="made with uncertain_as='negative' but the reward uses"):
        load_label_freqs(_freqs(tmp_path, uncertain_as="negative"), uncertain_as="positive")


def test_label_stats_refuses_bad_settings(synth, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown section"):
        label_stats(synth[0], tmp_path / "f.json", section="history")
    with pytest.raises(UserError, match="unknown uncertain_as"):
        label_stats(synth[0], tmp_path / "f.json", uncertain_as="maybe")
    with pytest.raises(UserError, match="manifest not found"):
        label_stats(tmp_path / "nope.jsonl", tmp_path / "f.json")
