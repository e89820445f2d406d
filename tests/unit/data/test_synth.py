"""SynthCXR: determinism, visible signatures, report/label agreement, priors, manifests, config errors.

The signature test is the benchmark's contract: a finding's signature is in the image exactly when
its label is. Statistics are measured against the same patient rendered with no finding at all
(same seeds, so anatomy and noise cancel), in fixed boxes written here by hand from the layout in
the module docstring (fractions of the film, x to the image's right, y down; the patient's right is
on the image's left)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from editgrpo.data.manifest import read_manifest, resolve_image_path
from editgrpo.data.schema import SPLITS
from editgrpo.data.synth import (
    DEFAULT_PREVALENCE,
    EDEMA_GRADES,
    EFFUSION_SIZES,
    FINDING_LABELS,
    FINDINGS,
    SynthConfig,
    SynthConfigError,
    SynthFindings,
    generate_studies,
    render_views,
    sample_findings,
    synth_study,
    truth_of,
    write_report,
    write_synthcxr,
)
from editgrpo.errors import UserError
from editgrpo.text.observations import CHEXPERT_14

SIZE = 112  # the default size: the acceptance criterion is about visibility at 112 px

# ---------------------------------------------------------------------------------------------
# Signature statistics (grey levels, image minus the same patient with no finding)
# ---------------------------------------------------------------------------------------------


def _box(image: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    size = image.shape[0]
    return image[round(y0 * size) : round(y1 * size), round(x0 * size) : round(x1 * size)]


def _mean(diff: np.ndarray, side: str, x0: float, x1: float, y0: float, y1: float) -> float:
    """Mean of ``diff`` in a box given for the patient's right, mirrored for the left."""
    if side == "left":
        x0, x1 = 1.0 - x1, 1.0 - x0
    return float(_box(diff, x0, x1, y0, y1).mean())


_BLOB_CENTRES = {"upper": (0.34, 0.27), "lower": (0.195, 0.535)}


def _strength(finding: str, image: np.ndarray, normal: np.ndarray, where: object) -> float:
    """How strongly ``finding``'s signature shows at ``where`` (a side, (side, lobe) or None)."""
    diff = image.astype(np.float64) - normal.astype(np.float64)
    if finding == "cardiomegaly":  # heart border beyond the widest normal heart, both sides
        return min(
            _mean(diff, "right", 0.335, 0.36, 0.57, 0.63), _mean(diff, "left", 0.255, 0.28, 0.57, 0.63)
        )
    if finding == "pleural_effusion":  # fluid in the costophrenic angle (left dome sits lower)
        rows = (0.765, 0.785) if where == "right" else (0.78, 0.80)
        return _mean(diff, str(where), 0.155, 0.19, *rows)
    if finding == "pneumothorax":  # darker apex: the only signature that darkens
        return -_mean(diff, str(where), 0.21, 0.29, 0.19, 0.30)
    if finding in ("consolidation", "lung_opacity"):
        side, lobe = where  # type: ignore[misc]
        x, y = _BLOB_CENTRES[lobe]
        return _mean(diff, side, x - 0.015, x + 0.015, y - 0.015, y + 0.015)
    if finding == "atelectasis":  # a ridge: the band minus the lung just above and below it
        band = _mean(diff, str(where), 0.21, 0.29, 0.36, 0.38)
        above = _mean(diff, str(where), 0.21, 0.29, 0.335, 0.35)
        below = _mean(diff, str(where), 0.21, 0.29, 0.39, 0.405)
        return band - 0.5 * (above + below)
    if finding == "edema":  # perihilar haze on both sides
        return min(_mean(diff, side, 0.33, 0.39, 0.38, 0.44) for side in ("left", "right"))
    if finding == "nodule":
        return _mean(diff, str(where), 0.265, 0.285, 0.46, 0.48)
    if finding == "support_devices":  # radiopaque pixels along the mediastinal corridor

        def bright(film: np.ndarray) -> int:
            return int((_box(film, 0.38, 0.66, 0.0, 0.85) >= 230).sum())

        return float(bright(image) - bright(normal))
    if finding == "fracture":  # rib step at the lateral chest wall: any change there
        return _mean(np.abs(diff), str(where), 0.06, 0.14, 0.40, 0.48)
    raise AssertionError(finding)


# Thresholds sit between the weakest signature (all severities, sides, anatomies, other findings)
# and the strongest leak of other findings into the box; the comments give the extremes measured
# over 1,500 random studies.
THRESHOLDS = {
    "cardiomegaly": 40.0,  # signature >= 100, leak < 2
    "pleural_effusion": 15.0,  # >= 27 (small effusion), leak 0
    "pneumothorax": 8.0,  # >= 12, leak 0 (every other finding only brightens)
    "consolidation": 45.0,  # >= 80, leak < 14
    "lung_opacity": 18.0,  # >= 27, leak < 14
    "atelectasis": 12.0,  # >= 24, leak < 4
    "edema": 15.0,  # >= 31, leak 0
    "nodule": 30.0,  # >= 49, leak < 18
    "support_devices": 15.0,  # >= 30 pixels, leak 0
    "fracture": 3.0,  # >= 6.5, leak < 0.1
}


def _locations(finding: str) -> list[object]:
    if finding in ("cardiomegaly", "edema", "support_devices"):
        return [None]
    if finding in ("consolidation", "lung_opacity"):
        return [(side, lobe) for side in ("left", "right") for lobe in ("upper", "lower")]
    return ["left", "right"]


def _where(finding: str, truth: SynthFindings) -> list[object]:
    if finding == "pleural_effusion":
        return ["left", "right"] if truth.effusion_side == "bilateral" else [truth.effusion_side]
    if finding == "consolidation":
        return [(truth.consolidation_side, truth.consolidation_lobe)]
    if finding == "lung_opacity":
        return [(truth.opacity_side, truth.opacity_lobe)]
    side = {
        "pneumothorax": truth.pneumothorax_side,
        "atelectasis": truth.atelectasis_side,
        "nodule": truth.nodule_side,
        "fracture": truth.fracture_side,
    }.get(finding)
    return [side]


def _blob_sibling(finding: str, truth: SynthFindings, where: object) -> bool:
    """Is ``where`` the lobe of the other blob finding? (consolidation and opacity share the lobe
    boxes; there the denser-than test below tells them apart)."""
    sibling = {"consolidation": "lung_opacity", "lung_opacity": "consolidation"}.get(finding)
    return sibling is not None and truth.has(sibling) and where in _where(sibling, truth)


def _frontal(truth: SynthFindings, seed: int) -> np.ndarray:
    return render_views(truth, seed=seed, image_size=SIZE, views=("PA",))["PA"]


def test_each_signature_is_present_exactly_when_its_label_is() -> None:
    """Over random studies with many findings at once (prevalence 0.35 each): at every place a
    finding can be, its signature is above threshold when the study has it there, and below when
    it does not, whatever else the film shows."""
    rng = np.random.default_rng(2024)
    present: dict[str, list[float]] = {f: [] for f in FINDINGS}
    absent: dict[str, list[float]] = {f: [] for f in FINDINGS}
    for _ in range(300):
        truth = sample_findings(rng, dict.fromkeys(FINDINGS, 0.35))
        seed = int(rng.integers(2**31))
        normal = _frontal(SynthFindings(), seed)
        image = _frontal(truth, seed)
        for finding in FINDINGS:
            here = _where(finding, truth) if truth.has(finding) else []
            if truth.has(finding):
                for where in here:
                    present[finding].append(_strength(finding, image, normal, where))
            for where in _locations(finding):
                if where in here or _blob_sibling(finding, truth, where):
                    continue
                # Where the finding is not, and on the film without it: no signature.
                film = _frontal(truth.without(finding), seed) if truth.has(finding) else image
                absent[finding].append(_strength(finding, film, normal, where))
    for finding in FINDINGS:
        assert len(present[finding]) >= 15, finding
        weakest, strongest_leak = min(present[finding]), max(absent[finding])
        threshold = THRESHOLDS[finding]
        assert weakest > threshold, f"{finding}: weakest signature {weakest:.1f} <= {threshold}"
        assert strongest_leak < threshold, f"{finding}: signature {strongest_leak:.1f} without the label"


def test_toggling_one_finding_changes_only_its_own_signature() -> None:
    """Same film with and without one finding: that finding's statistic jumps past its threshold;
    every other finding's statistic moves by less than its own threshold."""
    rng = np.random.default_rng(7)
    jumps: dict[str, list[float]] = {f: [] for f in FINDINGS}
    for _ in range(40):
        truth = sample_findings(rng, dict.fromkeys(FINDINGS, 0.5))
        seed = int(rng.integers(2**31))
        normal = _frontal(SynthFindings(), seed)
        image = _frontal(truth, seed)
        for finding in truth.present:
            without = _frontal(truth.without(finding), seed)
            for where in _where(finding, truth):
                jump = _strength(finding, image, normal, where) - _strength(finding, without, normal, where)
                assert jump > THRESHOLDS[finding], (finding, where, jump)
                jumps[finding].append(jump)
            for other in FINDINGS:
                if other == finding:
                    continue
                for where in _locations(other):
                    if _blob_sibling(other, truth, where):
                        continue
                    moved = _strength(other, image, normal, where) - _strength(other, without, normal, where)
                    assert abs(moved) < THRESHOLDS[other], (finding, other, where, moved)
    # Consolidation is denser than opacity: the image tells them apart, not only their place.
    assert max(jumps["lung_opacity"]) < min(jumps["consolidation"])


def test_lateral_view_shows_its_findings() -> None:
    """On the lateral film (no laterality): heart enlarging posteriorly, fluid in the posterior
    costophrenic sulcus, upper / lower lobe blobs, and tubes."""
    rng = np.random.default_rng(3)
    checks = [
        ("cardiomegaly", {"cardiomegaly": True}, (0.55, 0.58, 0.60, 0.68), 25.0),
        (
            "pleural_effusion",
            {"effusion_side": "right", "effusion_size": "small"},
            (0.70, 0.80, 0.76, 0.84),
            15.0,
        ),
        (
            "consolidation",
            {"consolidation_side": "left", "consolidation_lobe": "upper"},
            (0.42, 0.46, 0.28, 0.32),
            30.0,
        ),
        (
            "consolidation",
            {"consolidation_side": "right", "consolidation_lobe": "lower"},
            (0.66, 0.70, 0.60, 0.64),
            30.0,
        ),
    ]
    for _ in range(30):
        base = sample_findings(rng, dict.fromkeys(FINDINGS, 0.3))
        base = base.without("lung_opacity").without("consolidation")
        seed = int(rng.integers(2**31))
        for finding, fields, box, threshold in checks:
            without = base.without(finding)
            a = render_views(without, seed=seed, views=("LATERAL",))["LATERAL"].astype(float)
            b = render_views(replace(without, **fields), seed=seed, views=("LATERAL",))["LATERAL"].astype(
                float
            )
            assert _box(b - a, *box).mean() > threshold, (finding, fields)
        for device in ("ett", "central_line", "ng_tube"):
            without = base.without("support_devices")
            a = render_views(without, seed=seed, views=("LATERAL",))["LATERAL"]
            b = render_views(replace(without, device=device), seed=seed, views=("LATERAL",))["LATERAL"]
            assert int((b >= 230).sum()) - int((a >= 230).sum()) > 15, device


def test_effusion_severity_raises_the_fluid_level() -> None:
    rng = np.random.default_rng(5)
    for _ in range(30):
        truth = sample_findings(rng).without("pleural_effusion")
        seed = int(rng.integers(2**31))
        levels = []
        for size in EFFUSION_SIZES:
            film = _frontal(replace(truth, effusion_side="right", effusion_size=size), seed)
            levels.append(float(_box(film.astype(float), 0.15, 0.20, 0.55, 0.80).mean()))
        assert levels[0] + 10 < levels[1] and levels[1] + 10 < levels[2], levels


def test_render_is_deterministic_and_seeds_matter() -> None:
    truth = SynthFindings(cardiomegaly=True, effusion_side="left", effusion_size="moderate", device="ett")
    a = render_views(truth, seed=11, image_size=96, views=("AP", "LATERAL"))
    b = render_views(truth, seed=11, image_size=96, views=("AP", "LATERAL"))
    c = render_views(truth, seed=12, image_size=96, views=("AP", "LATERAL"))
    assert set(a) == {"AP", "LATERAL"}
    for view in a:
        assert a[view].dtype == np.uint8 and a[view].shape == (96, 96)
        assert np.array_equal(a[view], b[view])
        assert not np.array_equal(a[view], c[view])
    # The first view does not depend on which views follow it.
    alone = render_views(truth, seed=11, image_size=96, views=("AP",))
    assert np.array_equal(alone["AP"], a["AP"])
    with pytest.raises(ValueError, match="view = 'OBLIQUE' is not one of"):
        render_views(truth, seed=1, views=("OBLIQUE",))


# ---------------------------------------------------------------------------------------------
# Reports and labels
# ---------------------------------------------------------------------------------------------

# Observation -> words that mention it; a sentence with a negation cue mentions it negatively.
_MENTIONS = {
    "Cardiomegaly": r"\bheart\b|cardiomegaly|\bcardiac\b",
    "Enlarged Cardiomediastinum": r"mediastinal",
    "Lung Opacity": r"opacit",
    "Lung Lesion": r"nodule",
    "Edema": r"edema|congestion",
    "Consolidation": r"consolidation",
    "Atelectasis": r"atelectasis",
    "Pneumothorax": r"pneumothorax",
    "Pleural Effusion": r"effusion",
    "Fracture": r"fracture",
    "Support Devices": r"\btube\b|catheter",
}
# The cues CheXpert's negation patterns use for these phrasings (chexpert-labeler patterns/negation.txt).
_NEGATION = re.compile(r"\bno\b|\bnot\b|\bwithout\b|\bnormal\b|unremarkable|resol|remov", re.IGNORECASE)


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=\.)\s+", text.strip()) if s]


def _labels_read_from(text: str) -> dict[str, int]:
    read: dict[str, int] = {}
    for sentence in _sentences(text):
        for name, pattern in _MENTIONS.items():
            if re.search(pattern, sentence, re.IGNORECASE):
                value = 0 if _NEGATION.search(sentence) else 1
                read[name] = max(read.get(name, value), value)
    return read


@pytest.fixture(scope="module")
def studies_with_priors() -> list:
    config = SynthConfig(n=600, seed=9, with_priors=True, prevalence=dict.fromkeys(FINDINGS, 0.2))
    return [item.study for item in generate_studies(config, render=False)]


def test_labels_say_what_the_report_says(studies_with_priors: list) -> None:
    for study in studies_with_priors:
        text = f"{study.findings} {study.impression}"
        read = _labels_read_from(text)
        labels = dict(study.labels)
        assert labels.pop("No Finding", None) in (None, 1)
        assert labels == read, (study.study_id, text)
        for sentence in _sentences(text):
            assert sentence.endswith("."), sentence
            assert sentence[0].isupper(), sentence


def test_labels_follow_the_ground_truth(studies_with_priors: list) -> None:
    for study in studies_with_priors:
        truth, labels = truth_of(study), study.labels
        assert set(labels) <= set(CHEXPERT_14) and set(labels.values()) <= {0, 1}
        assert list(labels) == [name for name in CHEXPERT_14 if name in labels]  # CheXpert order
        for finding in FINDINGS:
            value = labels.get(FINDING_LABELS[finding])
            assert (value == 1) == truth.has(finding), (study.study_id, finding, value)
        # Normal structures are negated explicitly.
        if not truth.has("pleural_effusion"):
            assert labels["Pleural Effusion"] == 0
        if not truth.has("pneumothorax"):
            assert labels["Pneumothorax"] == 0
        if not truth.cardiomegaly:
            assert labels["Cardiomegaly"] == 0
        # CheXpert: No Finding when nothing but support devices is positive.
        pathology = [f for f in truth.present if f != "support_devices"]
        assert labels.get("No Finding") == (None if pathology else 1)
        assert "Pneumonia" not in labels and "Pleural Other" not in labels


def test_laterality_and_severity_words() -> None:
    rng = np.random.default_rng(0)
    for side in ("left", "right", "bilateral"):
        for size in EFFUSION_SIZES:
            truth = SynthFindings(effusion_side=side, effusion_size=size)
            for _ in range(5):
                report = write_report(truth, rng)
                sentence = next(s for s in _sentences(report.findings.lower()) if "effusion" in s)
                assert side in sentence and size in sentence, sentence
    truth = SynthFindings(consolidation_side="left", consolidation_lobe="upper", edema="moderate")
    findings = {write_report(truth, rng).findings.lower() for _ in range(30)}
    assert all("left upper lobe" in text and "moderate" in text for text in findings)
    assert len(findings) > 5, "the grammar should vary its phrasing"


_CHANGE_WORDS = {
    "new": r"\bnew(ly)?\b",
    "increased": r"\bincrease",
    "decreased": r"\bdecrease",
    "resolved": r"\bresol|\bremov",
    "unchanged": r"\bunchanged\b|\bstable\b",
}
_FINDING_WORDS = {**{f: _MENTIONS[FINDING_LABELS[f]] for f in FINDINGS}, "edema": r"\bedema\b"}


def _expected_change(prior: SynthFindings, current: SynthFindings, finding: str) -> str | None:
    """Written independently of the module: compare the two truths directly."""
    before, now = prior.has(finding), current.has(finding)
    if not before and not now:
        return None
    if not before:
        return "new"
    if not now:
        return "resolved"
    if finding == "pleural_effusion":
        assert prior.effusion_side == current.effusion_side
        a, b = EFFUSION_SIZES.index(prior.effusion_size), EFFUSION_SIZES.index(current.effusion_size)
    elif finding == "edema":
        a, b = EDEMA_GRADES.index(prior.edema), EDEMA_GRADES.index(current.edema)
    else:
        a = b = 0
    return "unchanged" if a == b else ("increased" if b > a else "decreased")


def test_prior_temporal_words_match_the_change(studies_with_priors: list) -> None:
    seen = set()
    with_prior = [s for s in studies_with_priors if s.prior is not None]
    assert 0.5 < len(with_prior) / len(studies_with_priors) < 0.7  # prior_probability 0.6
    for study in with_prior:
        current = truth_of(study)
        prior = SynthFindings.from_dict(study.meta["synth"]["prior_truth"])
        assert study.prior.date < study.date
        assert study.comparison == f"Chest radiograph of {study.prior.date}."
        assert study.prior.findings and study.prior.impression
        for finding in FINDINGS:
            change = _expected_change(prior, current, finding)
            described = [s for s in _sentences(study.findings) if re.search(_FINDING_WORDS[finding], s, re.I)]
            temporal = [s for s in described if any(re.search(w, s, re.I) for w in _CHANGE_WORDS.values())]
            if change is None:
                assert not temporal, (study.study_id, finding, temporal)
                continue
            seen.add(change)
            assert len(temporal) == 1, (study.study_id, finding, change, described)
            words = {c for c, w in _CHANGE_WORDS.items() if re.search(w, temporal[0], re.I)}
            assert words == {change}, (study.study_id, finding, change, temporal[0])
    assert seen == set(_CHANGE_WORDS)


def test_priors_keep_location_and_render_with_the_same_patient() -> None:
    config = SynthConfig(n=40, seed=4, with_priors=True, image_size=64, prior_probability=1.0)
    for study, images in generate_studies(config):
        assert study.prior is not None
        paths = [i.path for i in study.images] + [i.path for i in study.prior.images]
        assert sorted(paths) == sorted(images) and len(set(paths)) == len(paths)
        current, prior = truth_of(study), SynthFindings.from_dict(study.meta["synth"]["prior_truth"])
        for finding in ("consolidation", "lung_opacity", "pneumothorax", "pleural_effusion"):
            if current.has(finding) and prior.has(finding):
                field = {"consolidation": "consolidation_side", "lung_opacity": "opacity_side"}.get(
                    finding, "pneumothorax_side" if finding == "pneumothorax" else "effusion_side"
                )
                assert getattr(current, field) == getattr(prior, field)


# ---------------------------------------------------------------------------------------------
# Sampling, determinism, writing
# ---------------------------------------------------------------------------------------------


def test_prevalence_matches_the_config() -> None:
    prevalence = {**DEFAULT_PREVALENCE, "pneumothorax": 0.2, "fracture": 0.0}
    config = SynthConfig(n=2000, seed=1, prevalence={"pneumothorax": 0.2, "fracture": 0.0})
    truths = [truth_of(item.study) for item in generate_studies(config, render=False)]
    n = len(truths)
    for finding, p in prevalence.items():
        observed = sum(t.has(finding) for t in truths) / n
        tolerance = 4 * math.sqrt(max(p * (1 - p), 1e-9) / n)  # 4 sigma
        assert abs(observed - p) <= tolerance, (finding, observed, p)
    normal = sum(t.is_normal for t in truths) / n
    expected = math.prod(1 - p for p in prevalence.values())
    assert abs(normal - expected) <= 4 * math.sqrt(expected * (1 - expected) / n)


def test_default_prevalence_is_imbalanced_like_real_data() -> None:
    normal = math.prod(1 - p for p in DEFAULT_PREVALENCE.values())
    assert 0.45 <= normal <= 0.55
    for rare in ("pneumothorax", "consolidation", "edema", "nodule", "fracture"):
        assert DEFAULT_PREVALENCE[rare] <= 0.05
    assert set(DEFAULT_PREVALENCE) == set(FINDINGS)


def test_a_study_does_not_depend_on_n_or_generation_order() -> None:
    small, large = SynthConfig(n=5, seed=3, image_size=64), SynthConfig(n=50, seed=3, image_size=64)
    alone = synth_study(large, 4)
    in_sequence = list(generate_studies(small))[4]
    sliced = next(generate_studies(large, start=4, stop=5))
    for other in (in_sequence, sliced):
        assert other.study.to_dict() == alone.study.to_dict()
        assert other.images.keys() == alone.images.keys()
        assert all(np.array_equal(other.images[k], alone.images[k]) for k in alone.images)
    assert alone.study.study_id == "synth-000005"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_config_writes_byte_identical_files(tmp_path: Path) -> None:
    config = SynthConfig(n=12, seed=5, image_size=64, with_priors=True)
    write_synthcxr(tmp_path / "a", config)
    write_synthcxr(tmp_path / "b", SynthConfig(n=12, seed=5, image_size=64, with_priors=True))
    write_synthcxr(tmp_path / "c", SynthConfig(n=12, seed=6, image_size=64, with_priors=True))
    a, b, c = (_tree(tmp_path / name) for name in "abc")
    a.pop("synthcxr.json"), b.pop("synthcxr.json"), c.pop("synthcxr.json")  # holds timings
    assert a == b
    assert a["train.jsonl"] != c["train.jsonl"]
    assert any(a[k] != c.get(k) for k in a if k.endswith(".png"))


def test_write_synthcxr_layout_and_manifests(tmp_path: Path) -> None:
    calls: list[int] = []
    config = SynthConfig(n=30, seed=2, image_size=64, with_priors=True)
    summary = write_synthcxr(tmp_path, config, progress=calls.append)
    assert calls and calls[-1] == 30
    on_disk = json.loads((tmp_path / "synthcxr.json").read_text(encoding="utf-8"))
    assert on_disk["config"]["n"] == 30 and on_disk["config"]["prevalence"] == DEFAULT_PREVALENCE
    for key in ("splits", "prevalence", "with_prior_fraction", "normal_fraction", "seconds", "images"):
        assert key in on_disk and key in summary
    total, images = 0, 0
    for split in SPLITS:
        manifest = tmp_path / f"{split}.jsonl"
        studies, rejects = read_manifest(manifest)
        assert not rejects
        assert len(studies) == summary["splits"][split]
        total += len(studies)
        for study in studies:
            assert study.dataset == "synthcxr" and study.split == split and study.labels
            assert re.fullmatch(r"synth-\d{6}", study.study_id)
            all_images = list(study.images) + (list(study.prior.images) if study.prior else [])
            assert [i.view for i in study.images][1:] == ["LATERAL"]
            assert study.images[0].view in ("PA", "AP")
            for image in all_images:
                assert not Path(image.path).is_absolute() and image.path.startswith("images/")
                with PILImage.open(resolve_image_path(manifest, image.path)) as film:
                    assert film.mode == "L" and film.size == (64, 64)
                images += 1
    assert total == 30 and images == summary["images"]


def test_without_lateral_views() -> None:
    study = synth_study(SynthConfig(n=1, lateral=False, image_size=64), 0)
    assert [i.view for i in study.study.images] in (["PA"], ["AP"])
    assert len(study.images) == 1 and "lateral" not in study.study.technique


# ---------------------------------------------------------------------------------------------
# User errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"n": 0}, "SynthConfig.n = 0: must be a whole number >= 1"),
        ({"n": "10"}, "SynthConfig.n = '10'"),
        ({"n": 5, "seed": -1}, "SynthConfig.seed = -1"),
        (
            {"n": 5, "image_size": 16},
            "SynthConfig.image_size = 16: must be a whole number of pixels in [64, 1024]",
        ),
        (
            {"n": 5, "prevalence": {"pneumonia": 0.1}},
            "SynthConfig.prevalence['pneumonia']: is not a SynthCXR finding",
        ),
        (
            {"n": 5, "prevalence": {"edema": 1.5}},
            "SynthConfig.prevalence['edema'] = 1.5: must be a probability",
        ),
        ({"n": 5, "split_fractions": (0.5, 0.5, 0.5)}, "that sum to 1"),
        ({"n": 5, "prior_probability": 0.0}, "SynthConfig.prior_probability = 0.0"),
        ({"n": 5, "with_priors": "yes"}, "SynthConfig.with_priors = 'yes': must be True or False"),
    ],
)
def test_config_errors_name_field_and_fix(kwargs: dict, expected: str) -> None:
    with pytest.raises(SynthConfigError) as err:
        SynthConfig(**kwargs)
    assert expected in str(err.value)
    assert "Fix:" in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, UserError)


def test_config_reports_every_problem_and_lists_valid_findings() -> None:
    with pytest.raises(SynthConfigError) as err:
        SynthConfig(n=0, image_size=8, prevalence={"pneumonia": 0.1})
    message = str(err.value)
    assert len(message.splitlines()) == 3
    assert "pneumothorax" in message  # the valid names are listed


def test_config_fills_in_the_prevalence_table() -> None:
    config = SynthConfig(n=3, prevalence={"nodule": 0.3})
    assert config.prevalence == {**DEFAULT_PREVALENCE, "nodule": 0.3}
    assert list(config.prevalence) == list(FINDINGS)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"effusion_side": "left"}, "effusion_side and effusion_size must both be set"),
        ({"effusion_side": "middle", "effusion_size": "small"}, "effusion_side = 'middle' is not one of"),
        ({"device": "pacemaker"}, "device = 'pacemaker' is not one of 'ett', 'central_line', 'ng_tube'"),
        (
            {
                "consolidation_side": "left",
                "consolidation_lobe": "upper",
                "opacity_side": "left",
                "opacity_lobe": "upper",
            },
            "cannot share a lobe",
        ),
    ],
)
def test_findings_validation(kwargs: dict, expected: str) -> None:
    with pytest.raises(ValueError, match=re.escape(expected)):
        SynthFindings(**kwargs)


def test_findings_round_trip_and_helpers() -> None:
    truth = SynthFindings(cardiomegaly=True, edema="mild", nodule_side="left")
    assert SynthFindings.from_dict(truth.to_dict()) == truth
    assert truth.present == ("cardiomegaly", "edema", "nodule")
    assert truth.without("edema").present == ("cardiomegaly", "nodule")
    assert SynthFindings().is_normal and not truth.is_normal
    with pytest.raises(ValueError, match="unknown finding 'pneumonia'"):
        truth.has("pneumonia")
