"""SynthCXR: a procedural chest X-ray benchmark that needs no download.

Why it exists: tests, benchmarks and the demo need studies whose findings are *known* (ground
truth, not a labeler's guess) and *visible* (a model can learn them from the pixels), on a laptop,
offline, in seconds. Real datasets need credentials and gigabytes; SynthCXR draws its own.

How study ``i`` of a config is made (``synth_study``). Every random choice comes from
``numpy.random.default_rng([seed, i, stream])``, so study ``i`` is the same whatever ``n`` is and in
whatever order studies are generated (the property that lets a writer shard the work):

1. ground truth (``SynthFindings``): each finding is present independently with its configured
   prevalence (``sample_findings``); its attributes (side, lobe, severity, device kind) follow.
2. prior (``--with-priors``): a previous truth for the same patient, derived from the current one
   by temporal transitions (new, increased, decreased, resolved, unchanged; ``sample_prior_findings``).
3. report (``write_report``): findings and impression from a seeded phrase grammar, several
   phrasings per finding, explicit negatives for normal structures, laterality, severity and
   temporal words. Every sentence carries the CheXpert labels it states, so ``Study.labels`` is
   exactly what the text says.
4. images (``render_views``): frontal (PA or AP) and lateral films drawn from the truth with numpy
   masks over coordinate grids (no per-pixel Python loops), saved as PNG.

Layout of the frontal film (``render_views``). Coordinates are fractions of the film, x to the
image's right, y down; the patient's right is on the image's left (radiographic display convention).
Each finding has its own territory, so one signature never hides another (a choice for
learnability and testability: real findings overlap). Territories on each hemithorax:

- pneumothorax: lucent apical pleural space (no lung markings) bounded by a white pleural line;
- consolidation / lung opacity: a dense / a faint patchy blob in the upper lobe (upper zone, medial)
  or the lower lobe (lower zone, lateral); never both in the same lobe;
- atelectasis: a thin horizontal band in the upper mid lung, lateral half;
- nodule: a small dense round spot in the mid lung;
- edema: perihilar haze on both sides ("bat wing");
- pleural effusion: fluid density filling the costophrenic angle with a meniscus (higher laterally),
  up to a height set by its severity;
- cardiomegaly: heart half-width 0.225-0.245 of the film (cardiothoracic ratio about 0.6-0.67)
  instead of 0.14-0.158 (ratio about 0.38-0.43; the thorax spans 0.135-0.865);
- support device: a radiopaque tube (endotracheal, right internal jugular line, or enteric tube);
- fracture: a step in a lateral rib, outside the lung field, with a lucent fracture gap.

The lateral film shows the findings a lateral view shows (cardiomegaly, effusion in the posterior
costophrenic sulcus, blobs, band, nodule, edema, devices); pneumothorax and rib fractures are not
drawn on it, as they are rarely visible on a lateral view.

Label conventions follow CheXpert (Irvin et al., AAAI 2019, and stanfordmlgroup/chexpert-labeler):
1 positive, 0 negative (the report negates it, or says it has resolved or was removed), absent when
not mentioned; "No Finding" is 1 when no observation other than Support Devices is positive
(chexpert-labeler ``stages/aggregate.py``) and absent otherwise. The phrase book avoids words that
the CheXpert mention lists attach to another observation ("opacity" outside lung opacity, "line",
"plate", "contour" outside the mediastinum sentence), so a rule labeler reads the same labels back.
The nodule maps to "Lung Lesion"; Pneumonia and Pleural Other are never mentioned.
"""

from __future__ import annotations

import datetime as _dt
import functools
import itertools
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from editgrpo.data.manifest import write_manifest
from editgrpo.data.schema import SPLITS, Image, Prior, Study
from editgrpo.errors import UserError
from editgrpo.text.observations import CHEXPERT_14

DATASET = "synthcxr"

# ---------------------------------------------------------------------------------------------
# Vocabulary (registries: a bad name fails with the list of valid ones)
# ---------------------------------------------------------------------------------------------

FINDINGS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "lung_opacity",
    "atelectasis",
    "edema",
    "nodule",
    "support_devices",
    "fracture",
)

# Finding -> the CheXpert observation a report of it is labelled with.
FINDING_LABELS: dict[str, str] = {
    "cardiomegaly": "Cardiomegaly",
    "pleural_effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation",
    "lung_opacity": "Lung Opacity",
    "atelectasis": "Atelectasis",
    "edema": "Edema",
    "nodule": "Lung Lesion",
    "support_devices": "Support Devices",
    "fracture": "Fracture",
}

# Marginal prevalence per finding. Findings are drawn independently, so about half of the studies
# are fully normal (prod(1 - p) = 0.49) and the rare findings sit at 5% or less, an imbalance like
# MIMIC-CXR's (Johnson et al. 2019, CheXpert label counts). Independence keeps every finding
# learnable on its own: no finding can be predicted from another.
DEFAULT_PREVALENCE: dict[str, float] = {
    "cardiomegaly": 0.12,
    "pleural_effusion": 0.12,
    "pneumothorax": 0.04,
    "consolidation": 0.05,
    "lung_opacity": 0.06,
    "atelectasis": 0.08,
    "edema": 0.05,
    "nodule": 0.04,
    "support_devices": 0.10,
    "fracture": 0.03,
}

SIDES: tuple[str, ...] = ("left", "right")
EFFUSION_SIDES: tuple[str, ...] = ("left", "right", "bilateral")
EFFUSION_SIZES: tuple[str, ...] = ("small", "moderate", "large")  # ordered: index = severity
EDEMA_GRADES: tuple[str, ...] = ("mild", "moderate")  # ordered: index = severity
LOBES: tuple[str, ...] = ("upper", "lower")
DEVICES: tuple[str, ...] = ("ett", "central_line", "ng_tube")
CHANGES: tuple[str, ...] = ("new", "increased", "decreased", "resolved", "unchanged")

# Findings whose severity can grow or shrink between studies (the others are new/unchanged/resolved).
GRADED: tuple[str, ...] = ("pleural_effusion", "edema")
# Findings a prior may have that the current study no longer has. Cardiomegaly, nodules and rib
# fractures do not vanish between two radiographs, so the sampler never resolves them.
_RESOLVABLE = frozenset(
    (
        "pleural_effusion",
        "pneumothorax",
        "consolidation",
        "lung_opacity",
        "atelectasis",
        "edema",
        "support_devices",
    )
)

# Finding -> the SynthFindings fields that describe it (all cleared when the finding is absent).
_FIELDS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("cardiomegaly",),
    "pleural_effusion": ("effusion_side", "effusion_size"),
    "pneumothorax": ("pneumothorax_side",),
    "consolidation": ("consolidation_side", "consolidation_lobe"),
    "lung_opacity": ("opacity_side", "opacity_lobe"),
    "atelectasis": ("atelectasis_side",),
    "edema": ("edema",),
    "nodule": ("nodule_side",),
    "support_devices": ("device",),
    "fracture": ("fracture_side",),
}

FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP")
RENDER_VIEWS: tuple[str, ...] = ("PA", "AP", "LATERAL")
MIN_IMAGE_SIZE = 64  # below this the 1-2 pixel signatures at 112 px (pleural line, tubes) vanish
MAX_IMAGE_SIZE = 1024


def _one_of(field_name: str, value: Any, valid: Sequence[Any]) -> None:
    if value not in valid:
        raise ValueError(f"{field_name} = {value!r} is not one of {', '.join(map(repr, valid))}")


# ---------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthFindings:
    """The ground truth of one study: which findings it has, where and how severe.

    ``None`` (or ``False``) means absent. Paired fields go together: an effusion has a side and a
    size, a consolidation or opacity a side and a lobe. Consolidation and opacity never share a
    (side, lobe): they would draw over each other."""

    cardiomegaly: bool = False
    effusion_side: str | None = None  # EFFUSION_SIDES
    effusion_size: str | None = None  # EFFUSION_SIZES
    pneumothorax_side: str | None = None  # SIDES
    consolidation_side: str | None = None  # SIDES
    consolidation_lobe: str | None = None  # LOBES
    opacity_side: str | None = None  # SIDES
    opacity_lobe: str | None = None  # LOBES
    atelectasis_side: str | None = None  # SIDES
    edema: str | None = None  # EDEMA_GRADES
    nodule_side: str | None = None  # SIDES
    device: str | None = None  # DEVICES
    fracture_side: str | None = None  # SIDES

    def __post_init__(self) -> None:
        if not isinstance(self.cardiomegaly, bool):
            raise ValueError(f"cardiomegaly = {self.cardiomegaly!r} must be True or False")
        valid = {
            "effusion_side": EFFUSION_SIDES,
            "effusion_size": EFFUSION_SIZES,
            "pneumothorax_side": SIDES,
            "consolidation_side": SIDES,
            "consolidation_lobe": LOBES,
            "opacity_side": SIDES,
            "opacity_lobe": LOBES,
            "atelectasis_side": SIDES,
            "edema": EDEMA_GRADES,
            "nodule_side": SIDES,
            "device": DEVICES,
            "fracture_side": SIDES,
        }
        for name, options in valid.items():
            value = getattr(self, name)
            if value is not None:
                _one_of(name, value, options)
        for first, second in (
            ("effusion_side", "effusion_size"),
            ("consolidation_side", "consolidation_lobe"),
            ("opacity_side", "opacity_lobe"),
        ):
            if (getattr(self, first) is None) != (getattr(self, second) is None):
                raise ValueError(f"{first} and {second} must both be set or both be None")
        if self.consolidation_side is not None and (self.consolidation_side, self.consolidation_lobe) == (
            self.opacity_side,
            self.opacity_lobe,
        ):
            raise ValueError("consolidation and lung opacity cannot share a lobe (they would overlap)")

    def has(self, finding: str) -> bool:
        """Is ``finding`` (one of ``FINDINGS``) present?"""
        if finding not in _FIELDS:
            raise ValueError(f"unknown finding {finding!r}; valid: {', '.join(FINDINGS)}")
        value = getattr(self, _FIELDS[finding][0])
        return bool(value) if finding == "cardiomegaly" else value is not None

    @property
    def present(self) -> tuple[str, ...]:
        """The findings present, in ``FINDINGS`` order."""
        return tuple(f for f in FINDINGS if self.has(f))

    @property
    def is_normal(self) -> bool:
        """No finding at all (support devices included)."""
        return not self.present

    def without(self, finding: str) -> SynthFindings:
        """The same truth with ``finding`` removed (used for priors and signature tests)."""
        if finding not in _FIELDS:
            raise ValueError(f"unknown finding {finding!r}; valid: {', '.join(FINDINGS)}")
        cleared = {name: (False if name == "cardiomegaly" else None) for name in _FIELDS[finding]}
        return replace(self, **cleared)

    def severity(self, finding: str) -> int | None:
        """Ordinal severity of a graded finding (``GRADED``), ``None`` when absent or ungraded."""
        if finding == "pleural_effusion" and self.effusion_size is not None:
            return EFFUSION_SIZES.index(self.effusion_size)
        if finding == "edema" and self.edema is not None:
            return EDEMA_GRADES.index(self.edema)
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SynthFindings:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown SynthFindings field(s) {sorted(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return cls(**dict(data))


def _choose(u: float, options: Sequence[str], weights: Sequence[float]) -> str:
    """The option whose cumulative-weight bucket holds ``u`` in [0, 1)."""
    total = 0.0
    for option, weight in zip(options, weights, strict=True):
        total += weight
        if u < total:
            return option
    return options[-1]


def _side(u: float) -> str:
    return "left" if u < 0.5 else "right"


def _findings_from_draws(present: Mapping[str, bool], u: np.ndarray) -> SynthFindings:
    """Attributes from a fixed block of 16 uniforms, one slot per attribute, so the attributes of
    one finding never depend on which other findings are present."""
    kw: dict[str, Any] = {}
    if present["cardiomegaly"]:
        kw["cardiomegaly"] = True
    if present["pleural_effusion"]:
        # Right-sided effusions are a little more common than left (heart failure, Light 2002).
        kw["effusion_side"] = _choose(u[0], ("right", "left", "bilateral"), (0.4, 0.35, 0.25))
        kw["effusion_size"] = _choose(u[1], EFFUSION_SIZES, (0.5, 0.35, 0.15))
    if present["pneumothorax"]:
        kw["pneumothorax_side"] = _side(u[2])
    if present["consolidation"]:
        kw["consolidation_side"] = _side(u[3])
        kw["consolidation_lobe"] = _choose(u[4], ("lower", "upper"), (0.65, 0.35))
    if present["lung_opacity"]:
        side, lobe = _side(u[5]), _choose(u[6], ("lower", "upper"), (0.6, 0.4))
        if (side, lobe) == (kw.get("consolidation_side"), kw.get("consolidation_lobe")):
            lobe = "upper" if lobe == "lower" else "lower"
        kw["opacity_side"], kw["opacity_lobe"] = side, lobe
    if present["atelectasis"]:
        kw["atelectasis_side"] = _side(u[7])
    if present["edema"]:
        kw["edema"] = _choose(u[8], EDEMA_GRADES, (0.65, 0.35))
    if present["nodule"]:
        kw["nodule_side"] = _side(u[9])
    if present["support_devices"]:
        kw["device"] = _choose(u[10], DEVICES, (0.35, 0.4, 0.25))
    if present["fracture"]:
        kw["fracture_side"] = _side(u[11])
    return SynthFindings(**kw)


def sample_findings(rng: np.random.Generator, prevalence: Mapping[str, float] | None = None) -> SynthFindings:
    """One study's ground truth: each finding present with its prevalence, independently."""
    prevalence = {**DEFAULT_PREVALENCE, **(prevalence or {})}
    presence = rng.random(len(FINDINGS))
    attributes = rng.random(16)
    present = {f: bool(presence[i] < prevalence[f]) for i, f in enumerate(FINDINGS)}
    return _findings_from_draws(present, attributes)


# Temporal transitions for a finding present now: (change, probability). Changes that are not
# possible (increase from the smallest grade...) fall back to "unchanged".
_TRANSITIONS_GRADED = (("unchanged", 0.4), ("new", 0.25), ("increased", 0.175), ("decreased", 0.175))
_TRANSITIONS = {"cardiomegaly": (("unchanged", 0.85), ("new", 0.15))}
_TRANSITIONS_DEFAULT = (("unchanged", 0.6), ("new", 0.4))
_RESOLVED_PROBABILITY = 0.12  # an absent resolvable finding was present on the prior


def sample_prior_findings(rng: np.random.Generator, current: SynthFindings) -> SynthFindings:
    """The truth of the patient's prior study, from the current one by temporal transitions.

    Present now -> unchanged (same attributes), new (absent before), increased / decreased (graded
    findings: one grade lower / higher before). Absent now -> resolved (present before, for
    ``_RESOLVABLE`` findings) or absent before. A finding keeps its side and lobe over time."""
    u = rng.random(len(FINDINGS))
    # Attributes for findings the prior has and the current study does not (resolved ones).
    alternative = _findings_from_draws(dict.fromkeys(FINDINGS, True), rng.random(16))
    kw: dict[str, Any] = {}
    for i, finding in enumerate(FINDINGS):
        names = _FIELDS[finding]
        if current.has(finding):
            table = (
                _TRANSITIONS_GRADED if finding in GRADED else _TRANSITIONS.get(finding, _TRANSITIONS_DEFAULT)
            )
            change = _choose(u[i], [c for c, _ in table], [p for _, p in table])
            if change == "new":
                continue
            kw.update({name: getattr(current, name) for name in names})
            if change in ("increased", "decreased"):
                grades = EFFUSION_SIZES if finding == "pleural_effusion" else EDEMA_GRADES
                level = current.severity(finding) or 0
                level += -1 if change == "increased" else 1  # the prior was smaller / larger
                if 0 <= level < len(grades):
                    kw["effusion_size" if finding == "pleural_effusion" else "edema"] = grades[level]
        elif finding in _RESOLVABLE and u[i] < _RESOLVED_PROBABILITY:
            kw.update({name: getattr(alternative, name) for name in names})
    if kw.get("consolidation_side") is not None and (kw["consolidation_side"], kw["consolidation_lobe"]) == (
        kw.get("opacity_side"),
        kw.get("opacity_lobe"),
    ):
        # A lobe clash involves at least one resolved finding: move that one to the other lobe.
        key = "opacity_lobe" if not current.has("lung_opacity") else "consolidation_lobe"
        kw[key] = "upper" if kw[key] == "lower" else "lower"
    return SynthFindings(**kw)


def temporal_changes(prior: SynthFindings, current: SynthFindings) -> dict[str, str]:
    """Finding -> change (``CHANGES``) for every finding present on either study."""
    changes: dict[str, str] = {}
    for finding in FINDINGS:
        before, now = prior.has(finding), current.has(finding)
        if before and now:
            a, b = prior.severity(finding), current.severity(finding)
            if a is None or b is None or a == b:
                changes[finding] = "unchanged"
            else:
                changes[finding] = "increased" if b > a else "decreased"
        elif now:
            changes[finding] = "new"
        elif before:
            changes[finding] = "resolved"
    return changes


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


class SynthConfigError(UserError, ValueError):
    """A bad SynthCXR setting; the message names the field, the value, the rule and the fix."""


@dataclass
class SynthConfig:
    """What ``write_synthcxr`` / ``generate_studies`` make.

    ``prevalence`` overrides some findings' prevalence (keys from ``FINDINGS``); after validation it
    holds the full table (defaults filled in). ``prior_probability``: the share of studies that get
    a prior when ``with_priors`` is on."""

    n: int
    seed: int = 0
    image_size: int = 112
    with_priors: bool = False
    prevalence: dict[str, float] | None = None
    lateral: bool = True
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    prior_probability: float = 0.6

    def __post_init__(self) -> None:
        problems: list[str] = []

        def problem(name: str, rule: str, fix: str) -> None:
            problems.append(f"SynthConfig.{name} = {getattr(self, name)!r}: {rule}. Fix: {fix}.")

        def is_int(value: Any) -> bool:
            return isinstance(value, int | np.integer) and not isinstance(value, bool)

        if not is_int(self.n) or self.n < 1:
            problem("n", "must be a whole number >= 1 (the number of studies)", "pass --n 1 or more")
        if not is_int(self.seed) or self.seed < 0:
            problem("seed", "must be a whole number >= 0", "pass --seed 0 or another non-negative integer")
        if not is_int(self.image_size) or not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            problem(
                "image_size",
                f"must be a whole number of pixels in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] (thin signatures "
                f"such as the pleural line and tubes vanish below {MIN_IMAGE_SIZE} px)",
                "pass --image-size 112 (the default) or another size in range",
            )
        for name in ("with_priors", "lateral"):
            if not isinstance(getattr(self, name), bool):
                problem(name, "must be True or False", f"set {name}=True or {name}=False")
        if (
            isinstance(self.prior_probability, bool)
            or not isinstance(self.prior_probability, int | float)
            or not 0.0 < self.prior_probability <= 1.0
        ):
            problem(
                "prior_probability", "must be a number in (0, 1]", "use e.g. 0.6 (60% of studies get a prior)"
            )
        if self.prevalence is not None:
            if not isinstance(self.prevalence, Mapping):
                problem(
                    "prevalence",
                    "must be a mapping finding -> probability",
                    "pass e.g. {'pneumothorax': 0.1}",
                )
            else:
                for name, value in self.prevalence.items():
                    if name not in DEFAULT_PREVALENCE:
                        problems.append(
                            f"SynthConfig.prevalence[{name!r}]: is not a SynthCXR finding. "
                            f"Fix: use one of {', '.join(FINDINGS)}."
                        )
                    elif (
                        isinstance(value, bool)
                        or not isinstance(value, int | float)
                        or not 0.0 <= value <= 1.0
                    ):
                        problems.append(
                            f"SynthConfig.prevalence[{name!r}] = {value!r}: must be a probability in [0, 1]. "
                            f"Fix: use e.g. {DEFAULT_PREVALENCE[name]} (the default)."
                        )
        fractions = self.split_fractions
        if (
            not isinstance(fractions, Sequence)
            or len(fractions) != len(SPLITS)
            or any(isinstance(x, bool) or not isinstance(x, int | float) or x < 0 for x in fractions)
            or abs(sum(fractions) - 1.0) > 1e-6
        ):
            problem(
                "split_fractions",
                f"must be {len(SPLITS)} non-negative numbers ({', '.join(SPLITS)}) that sum to 1",
                "use e.g. (0.8, 0.1, 0.1)",
            )
        if problems:
            raise SynthConfigError("\n".join(problems))
        overrides = dict(self.prevalence or {})
        self.prevalence = {f: float(overrides.get(f, DEFAULT_PREVALENCE[f])) for f in FINDINGS}
        train, validate, test = (float(x) for x in fractions)
        self.split_fractions = (train, validate, test)
        self.prior_probability = float(self.prior_probability)
        self.n, self.seed, self.image_size = int(self.n), int(self.seed), int(self.image_size)


# ---------------------------------------------------------------------------------------------
# Report grammar
# ---------------------------------------------------------------------------------------------

Labels = dict[str, int]


@dataclass(frozen=True)
class SynthReport:
    """A reference report and the CheXpert labels its sentences state (``CHEXPERT_14`` order)."""

    findings: str
    impression: str
    labels: dict[str, int]


@dataclass(frozen=True)
class _Mention:
    """How the grammar names one finding of one study."""

    finding: str
    noun: str  # full noun phrase: "small left pleural effusion"
    base: str  # without severity: "left pleural effusion"
    present: tuple[str, ...]  # sentences for a finding with no prior to compare with
    plural: bool = False
    countable: bool = True  # takes "a" ("a nodule") or not ("edema")
    grade: str | None = None
    temporal: Mapping[str, tuple[str, ...]] | None = None  # per-change overrides


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


_DEVICE_NOUNS = {
    "ett": "endotracheal tube",
    "central_line": "right internal jugular central venous catheter",
    "ng_tube": "enteric tube",
}
_DEVICE_SENTENCES = {
    "ett": (
        "An endotracheal tube terminates above the carina.",
        "Endotracheal tube in standard position.",
        "The endotracheal tube tip projects over the mid trachea.",
    ),
    "central_line": (
        "A right internal jugular central venous catheter terminates in the superior vena cava.",
        "Right internal jugular central venous catheter with its tip in the superior vena cava.",
        "Right IJ catheter tip in the SVC.",
    ),
    "ng_tube": (
        "An enteric tube courses below the diaphragm into the stomach.",
        "Nasogastric tube with its tip in the stomach.",
        "The enteric tube extends below the diaphragm.",
    ),
}


def _mention(truth: SynthFindings, finding: str) -> _Mention:
    """Noun phrases and present-tense sentences for a finding of ``truth`` (must be present)."""
    if finding == "cardiomegaly":
        return _Mention(
            finding,
            "cardiomegaly",
            "cardiomegaly",
            (
                "The heart is enlarged.",
                "Cardiomegaly.",
                "There is cardiomegaly.",
                "The cardiac silhouette is enlarged.",
                "The heart size is enlarged.",
            ),
            countable=False,
            temporal={
                "new": ("New cardiomegaly.", "The heart is newly enlarged."),
                "unchanged": (
                    "Stable cardiomegaly.",
                    "Unchanged cardiomegaly.",
                    "Cardiomegaly is unchanged.",
                ),
            },
        )
    if finding == "pleural_effusion":
        side, size = truth.effusion_side, truth.effusion_size
        plural = side == "bilateral"
        base = f"{side} pleural effusion{'s' if plural else ''}"
        noun = f"{size} {base}"
        there = "There are" if plural else "There is a"
        be = "are" if plural else "is"
        present = (f"{_cap(noun)}.", f"{there} {noun}.", f"{_cap(noun)} {be} present.")
        if size == "small":
            angle = "both costophrenic angles" if plural else f"the {side} costophrenic angle"
            present += (f"{_cap(noun)} with blunting of {angle}.",)
        elif size == "large":
            present += (f"{_cap(noun)} with a meniscus along the lateral chest wall.",)
        return _Mention(finding, noun, base, present, plural=plural, grade=size)
    if finding == "pneumothorax":
        side = truth.pneumothorax_side
        noun = f"{side} apical pneumothorax"
        present = (
            f"{_cap(noun)}.",
            f"There is a {noun}.",
            f"A {side}-sided apical pneumothorax is present.",
            f"{_cap(noun)} with a visible visceral pleural edge.",
        )
        return _Mention(finding, noun, f"{side} pneumothorax", present)
    if finding == "consolidation":
        side, lobe = truth.consolidation_side, truth.consolidation_lobe
        noun = f"{side} {lobe} lobe consolidation"
        present = (
            f"{_cap(noun)}.",
            f"There is consolidation in the {side} {lobe} lobe.",
            f"Focal consolidation in the {side} {lobe} lobe.",
            f"{_cap(noun)} is present.",
        )
        return _Mention(finding, noun, noun, present, countable=False)
    if finding == "lung_opacity":
        side, lobe = truth.opacity_side, truth.opacity_lobe
        noun = f"{side} {lobe} lobe opacity"
        present = (
            f"Patchy opacity in the {side} {lobe} lobe.",
            f"There is a hazy opacity in the {side} {lobe} lobe.",
            f"Ill-defined {noun}.",
        )
        return _Mention(finding, noun, noun, present)
    if finding == "atelectasis":
        side = truth.atelectasis_side
        noun = f"{side} mid lung linear atelectasis"
        present = (
            f"Linear atelectasis in the {side} mid lung.",
            f"There is subsegmental atelectasis in the {side} mid lung.",
            f"{_cap(noun)}.",
        )
        return _Mention(finding, noun, f"{side} mid lung atelectasis", present, countable=False)
    if finding == "edema":
        grade = truth.edema
        noun = f"{grade} pulmonary edema"
        present = (
            f"{_cap(noun)}.",
            f"There is {noun}.",
            f"{_cap(grade)} interstitial pulmonary edema.",
            f"Findings are consistent with {noun}.",
            f"{_cap(noun)} with perihilar predominance.",
        )
        return _Mention(finding, noun, "pulmonary edema", present, countable=False, grade=grade)
    if finding == "nodule":
        side = truth.nodule_side
        noun = f"{side} mid lung nodule"
        present = (
            f"There is a {noun}.",
            f"A small nodule projects over the {side} mid lung.",
            f"{_cap(noun)}.",
        )
        return _Mention(finding, noun, noun, present)
    if finding == "support_devices":
        noun = _DEVICE_NOUNS[truth.device]
        return _Mention(
            finding,
            noun,
            noun,
            _DEVICE_SENTENCES[truth.device],
            temporal={
                "new": (f"Interval placement of a new {noun}.", f"A new {noun} is in place."),
                "unchanged": (f"Unchanged position of the {noun}.", f"The {noun} is in stable position."),
                "resolved": (f"Interval removal of the {noun}.", f"The {noun} has been removed."),
            },
        )
    if finding == "fracture":
        side = truth.fracture_side
        noun = f"{side} lateral rib fracture"
        present = (
            f"{_cap(noun)}.",
            f"There is a displaced fracture of a {side} lateral rib.",
            f"Acute-appearing {noun}.",
        )
        return _Mention(finding, noun, noun, present)
    raise ValueError(f"unknown finding {finding!r}; valid: {', '.join(FINDINGS)}")


def _temporal_sentence(mention: _Mention, change: str, rng: np.random.Generator) -> str:
    """A sentence describing ``mention`` with its change since the prior."""
    if mention.temporal and change in mention.temporal:
        return _pick(rng, mention.temporal[change])
    be = "are" if mention.plural else "is"
    have = "have" if mention.plural else "has"
    article = "a " if mention.countable and not mention.plural else ""
    noun, base = mention.noun, mention.base
    options: tuple[str, ...]
    if change == "new":
        options = (f"New {noun}.", f"There {be} {article}new {noun}.")
    elif change == "unchanged":
        options = (f"Unchanged {noun}.", f"Stable {noun}.", f"The {noun} {be} unchanged.")
    elif change == "increased":
        options = (
            f"Increased {base}, now {mention.grade}.",
            f"Interval increase in the {base}, which {be} now {mention.grade}.",
        )
    elif change == "decreased":
        options = (
            f"Decreased {base}, now {mention.grade}.",
            f"Interval decrease in the {base}, which {be} now {mention.grade}.",
        )
    elif change == "resolved":
        options = (f"The previously seen {base} {have} resolved.", f"Interval resolution of the {base}.")
    else:
        raise ValueError(f"unknown change {change!r}; valid: {', '.join(CHANGES)}")
    return _pick(rng, options)


_HEART_NORMAL = (
    "Heart size is normal.",
    "The heart is normal in size.",
    "Normal heart size.",
    "The heart is not enlarged.",
)
_MEDIASTINUM_NORMAL = (
    "The mediastinal contours are normal.",
    "Mediastinal contours are within normal limits.",
    "The hilar and mediastinal contours are unremarkable.",
)
_LUNGS_CLEAR: tuple[tuple[str, Labels], ...] = (
    ("The lungs are clear.", {}),
    ("Lungs are clear.", {}),
    ("The lungs are well expanded and clear.", {}),
    ("No focal consolidation.", {"Consolidation": 0}),
    ("The lungs are clear without focal consolidation.", {"Consolidation": 0}),
)
_NO_EDEMA = ("No pulmonary edema.", "There is no pulmonary edema.", "No pulmonary vascular congestion.")
_PLEURA_CLEAR = (
    "No pleural effusion or pneumothorax.",
    "There is no pleural effusion or pneumothorax.",
    "No pneumothorax or pleural effusion.",
)
_BONES: tuple[tuple[str, Labels], ...] = (
    ("No displaced rib fracture.", {"Fracture": 0}),
    ("No acute osseous abnormality.", {}),
    ("The osseous structures are intact.", {}),
)
_IMPRESSION_NORMAL = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.",
)
# Impression order: the findings a radiologist would put first.
_IMPRESSION_PRIORITY = (
    "pneumothorax",
    "consolidation",
    "pleural_effusion",
    "edema",
    "lung_opacity",
    "cardiomegaly",
    "atelectasis",
    "nodule",
    "fracture",
)
_PARENCHYMA = ("consolidation", "lung_opacity", "atelectasis", "edema", "nodule")


def write_report(
    truth: SynthFindings, rng: np.random.Generator, prior: SynthFindings | None = None
) -> SynthReport:
    """Findings and impression for ``truth``, and the labels they state.

    With ``prior``, every finding present on either study is described with its change
    (``temporal_changes``); resolved findings are negatives (CheXpert reads "has resolved",
    "removal of" as negation: chexpert-labeler ``patterns/negation.txt``)."""
    changes = temporal_changes(prior, truth) if prior is not None else {}
    sentences: dict[str, list[tuple[str, Labels]]] = {
        "devices": [],
        "lungs": [],
        "pleura": [],
        "heart": [],
        "bones": [],
    }

    def describe(finding: str, group: str) -> bool:
        """Add the sentence for ``finding`` if present now or resolved; was it mentioned?"""
        label = FINDING_LABELS[finding]
        change = changes.get(finding)
        if truth.has(finding):
            mention = _mention(truth, finding)
            text = _temporal_sentence(mention, change, rng) if change else _pick(rng, mention.present)
            sentences[group].append((text, {label: 1}))
            return True
        if change == "resolved":
            assert prior is not None  # changes exist only against a prior
            text = _temporal_sentence(_mention(prior, finding), "resolved", rng)
            sentences[group].append((text, {label: 0}))
            return True
        return False

    describe("support_devices", "devices")
    mentioned = {f: describe(f, "lungs") for f in _PARENCHYMA}
    if not any(mentioned.values()):
        sentences["lungs"].append(_LUNGS_CLEAR[int(rng.integers(len(_LUNGS_CLEAR)))])
    elif not mentioned["consolidation"] and rng.random() < 0.4:
        sentences["lungs"].append(("No focal consolidation.", {"Consolidation": 0}))
    if not mentioned["edema"] and rng.random() < 0.35:
        sentences["lungs"].append((_pick(rng, _NO_EDEMA), {"Edema": 0}))

    effusion = describe("pleural_effusion", "pleura")
    pneumothorax = describe("pneumothorax", "pleura")
    if not effusion and not pneumothorax:
        sentences["pleura"].append((_pick(rng, _PLEURA_CLEAR), {"Pleural Effusion": 0, "Pneumothorax": 0}))
    elif not effusion:
        sentences["pleura"].append(("No pleural effusion.", {"Pleural Effusion": 0}))
    elif not pneumothorax:
        sentences["pleura"].append(
            (_pick(rng, ("No pneumothorax.", "There is no pneumothorax.")), {"Pneumothorax": 0})
        )

    if not describe("cardiomegaly", "heart"):
        if rng.random() < 0.3:
            sentences["heart"].append(
                (
                    "Heart size and mediastinal contours are normal.",
                    {"Cardiomegaly": 0, "Enlarged Cardiomediastinum": 0},
                )
            )
        else:
            sentences["heart"].append((_pick(rng, _HEART_NORMAL), {"Cardiomegaly": 0}))
    if "mediastinal" not in sentences["heart"][0][0] and rng.random() < 0.7:
        sentences["heart"].append((_pick(rng, _MEDIASTINUM_NORMAL), {"Enlarged Cardiomediastinum": 0}))

    if not describe("fracture", "bones") and rng.random() < 0.7:
        sentences["bones"].append(_BONES[int(rng.integers(len(_BONES)))])

    # Two orders seen in practice: lungs first, or heart first.
    order = ("devices", "lungs", "pleura", "heart", "bones")
    if rng.random() < 0.35:
        order = ("devices", "heart", "lungs", "pleura", "bones")
    findings_part = [s for group in order for s in sentences[group]]

    pathology = [f for f in _IMPRESSION_PRIORITY if truth.has(f)]
    impression_part: list[tuple[str, Labels]] = []
    if not pathology:
        impression_part.append((_pick(rng, _IMPRESSION_NORMAL), {"No Finding": 1}))
    for finding in pathology[:3]:
        mention = _mention(truth, finding)
        change = changes.get(finding)
        text = _temporal_sentence(mention, change, rng) if change else f"{_cap(mention.noun)}."
        impression_part.append((text, {FINDING_LABELS[finding]: 1}))

    merged: dict[str, int] = {}
    for _, labels in findings_part + impression_part:
        for name, value in labels.items():
            # chexpert-labeler aggregate.py: a positive mention wins over a negative one.
            merged[name] = max(merged.get(name, value), value)
    return SynthReport(
        findings=" ".join(text for text, _ in findings_part),
        impression=" ".join(text for text, _ in impression_part),
        labels={name: merged[name] for name in CHEXPERT_14 if name in merged},
    )


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

# Intensities on a 0-1 scale before exposure (0 black, 1 white): air < lung < soft tissue < bone.
_AIR, _LUNG, _SOFT, _FLUID, _MEDIASTINUM, _HEART, _DEVICE = 0.04, 0.16, 0.46, 0.50, 0.58, 0.64, 1.05
_NOISE_SIGMA = 0.015  # quantum mottle, about 4 grey levels
_JITTER_SLOTS = 8  # fixed per view, so adding a finding never shifts another finding's draws
_TEXTURE_VARIANTS = 4


@dataclass(frozen=True)
class _Anatomy:
    """Patient-level variation, shared by the patient's current and prior films."""

    dx: float
    dy: float
    scale: float
    heart: float  # frontal heart half-width (normal: cardiothoracic ratio about 0.38-0.43)
    heart_lateral: float
    dome_right: float  # hemidiaphragm dome heights; the right sits higher than the left
    dome_left: float
    gain: float  # exposure
    bias: float
    texture: int


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    u = rng.random(10)
    dome_right = 0.69 + 0.02 * u[5]
    return _Anatomy(
        dx=(u[0] - 0.5) * 0.016,
        dy=(u[1] - 0.5) * 0.016,
        scale=0.98 + 0.04 * u[2],
        heart=0.14 + 0.018 * u[3],
        heart_lateral=0.13 + 0.02 * u[4],
        dome_right=dome_right,
        dome_left=dome_right + 0.01 + 0.012 * u[6],
        gain=0.95 + 0.1 * u[7],
        bias=(u[8] - 0.5) * 0.04,
        texture=int(u[9] * _TEXTURE_VARIANTS),
    )


@functools.cache
def _pixel_centres(size: int) -> np.ndarray:
    return ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)


@functools.cache
def _textures(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(lung markings variants (V, size, size), patchy texture (size, size) in [0, 1]).

    Fixed by the renderer, not by a study, so they are computed once per size with a constant seed:
    vessel-like streaks radiating from the hila, fading to the periphery."""
    rng = np.random.default_rng(20240611)
    axis = _pixel_centres(size).astype(np.float64)
    x, y = axis[None, :], axis[:, None]
    markings = np.zeros((_TEXTURE_VARIANTS, size, size), dtype=np.float32)
    for v in range(_TEXTURE_VARIANTS):
        for hx in (0.41, 0.59):
            phase, twist = rng.uniform(0, 2 * np.pi), rng.uniform(6, 12)
            r = np.hypot(x - hx, y - 0.45)
            angle = np.arctan2(y - 0.45, x - hx)
            streak = (0.5 + 0.5 * np.cos(angle * 22 + phase + twist * r)) ** 4
            markings[v] += (0.06 * streak * np.exp(-r / 0.25)).astype(np.float32)
    fx, fy, px, py = rng.uniform(20, 34, 4)
    patch = 0.5 + 0.25 * np.sin(fx * x + 3 * px) * np.sin(fy * y + 2 * py) + 0.25 * np.sin(px * (x + y))
    return markings, np.clip(patch, 0, 1).astype(np.float32)


class _Film:
    """A float canvas and its pixel centres in the canonical frame of the patient's anatomy.

    Shapes are described in canonical coordinates; the patient's shift and scale only move the
    pixel grid (``xs``, ``ys``). ``window`` returns the pixel block a shape can touch, so every
    shape costs only its own area."""

    def __init__(self, size: int, anatomy: _Anatomy, background: float) -> None:
        axis = _pixel_centres(size)
        self.size = size
        self.anatomy = anatomy
        self.xs = ((axis - 0.5 - anatomy.dx) / anatomy.scale + 0.5).astype(np.float32)
        self.ys = ((axis - 0.5 - anatomy.dy) / anatomy.scale + 0.5).astype(np.float32)
        self.px = np.full((size, size), background, dtype=np.float32)

    def _index(self, value: float, offset: float) -> float:
        """The (fractional) pixel index whose centre sits at canonical ``value``."""
        return ((value - 0.5) * self.anatomy.scale + 0.5 + offset) * self.size - 0.5

    def window(
        self, x0: float, x1: float, y0: float, y1: float
    ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
        """(block, x (1, w), y (h, 1)) for the canonical box [x0, x1] x [y0, y1], or None if empty."""
        a = self.anatomy
        c0, c1 = math.ceil(self._index(x0, a.dx)), math.floor(self._index(x1, a.dx)) + 1
        r0, r1 = math.ceil(self._index(y0, a.dy)), math.floor(self._index(y1, a.dy)) + 1
        c0, r0 = max(c0, 0), max(r0, 0)
        c1, r1 = min(c1, self.size), min(r1, self.size)
        if c1 <= c0 or r1 <= r0:
            return None
        return (slice(r0, r1), slice(c0, c1)), self.xs[None, c0:c1], self.ys[r0:r1, None]

    def add(self, block: tuple[slice, slice], alpha: np.ndarray, amount: float) -> None:
        self.px[block] += amount * alpha

    def blend(self, block: tuple[slice, slice], alpha: np.ndarray, value: float) -> None:
        region = self.px[block]
        region += (value - region) * alpha

    def lighten(self, block: tuple[slice, slice], alpha: np.ndarray, value: float) -> None:
        region = self.px[block]
        np.maximum(region, value * alpha, out=region)


Shape = tuple[tuple[slice, slice], np.ndarray]


def _ellipse(film: _Film, cx: float, cy: float, ax: float, ay: float, edge: float) -> Shape | None:
    """Alpha of a filled ellipse with a soft rim ``edge`` wide (0.5 on the boundary)."""
    margin = edge * max(ax, ay) / min(ax, ay)
    found = film.window(cx - ax - margin, cx + ax + margin, cy - ay - margin, cy + ay + margin)
    if found is None:
        return None
    block, x, y = found
    r = np.sqrt(np.square((x - cx) / ax) + np.square((y - cy) / ay))
    return block, np.clip((1.0 - r) * (min(ax, ay) / edge) + 0.5, 0.0, 1.0)


def _gaussian(film: _Film, cx: float, cy: float, sx: float, sy: float) -> Shape | None:
    """Separable 2-D Gaussian (peak 1), as an outer product of two 1-D profiles."""
    found = film.window(cx - 3 * sx, cx + 3 * sx, cy - 3 * sy, cy + 3 * sy)
    if found is None:
        return None
    block, x, y = found
    return block, np.exp(-0.5 * np.square((y - cy) / sy)) * np.exp(-0.5 * np.square((x - cx) / sx))


def _polyline(
    film: _Film, points: Sequence[tuple[float, float]], half_width: float, edge: float
) -> list[Shape]:
    """Alpha of a thick line through ``points``, one block per segment."""
    shapes = []
    margin = half_width + edge
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        found = film.window(
            min(x0, x1) - margin, max(x0, x1) + margin, min(y0, y1) - margin, max(y0, y1) + margin
        )
        if found is None:
            continue
        block, x, y = found
        vx, vy = x1 - x0, y1 - y0
        t = np.clip(((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
        distance = np.sqrt(np.square(x - (x0 + t * vx)) + np.square(y - (y0 + t * vy)))
        shapes.append((block, np.clip((half_width - distance) / edge + 0.5, 0.0, 1.0)))
    return shapes


def _superellipse(film: _Film, cx: float, cy: float, ax: float, ay: float, edge: float) -> Shape:
    """A rounded box (|dx/ax|^4 + |dy/ay|^4 <= 1): the torso."""
    found = film.window(cx - ax - edge, cx + ax + edge, cy - ay - edge, cy + ay + edge)
    assert found is not None
    block, x, y = found
    r4 = np.square(np.square((x - cx) / ax)) + np.square(np.square((y - cy) / ay))
    # Near the boundary 1 - r ~ (1 - r^4) / 4.
    return block, np.clip((1.0 - r4) * (0.25 * min(ax, ay) / edge) + 0.5, 0.0, 1.0)


def _mirror(side: str, x: float) -> float:
    """Frontal x of a landmark given for the patient's right (image left)."""
    return x if side == "right" else 1.0 - x


# Frontal landmarks, for the patient's right side (mirrored for the left).
_LUNG_CENTRE, _LUNG_AXES = (0.295, 0.60), (0.165, 0.46)
_DOME_X, _RECESS_DEPTH, _RECESS_WIDTH = 0.32, 0.12, 0.17  # diaphragm drops laterally into the recess
_COLLAPSED_CENTRE, _COLLAPSED_AXES = (0.325, 0.655), (0.125, 0.43)  # the lung under a pneumothorax
_BLOBS = {"upper": (0.34, 0.27), "lower": (0.195, 0.535)}  # consolidation / opacity centres
_NODULE = (0.275, 0.47)
_BAND = (0.17, 0.31, 0.37)  # atelectasis: lateral x, medial x, y
_EDEMA_CENTRE, _EDEMA_SIGMA = (0.36, 0.41), (0.05, 0.07)
_EDEMA_AMPLITUDE = {"mild": 0.15, "moderate": 0.25}
_EFFUSION_LATERAL_X = 0.135
_EFFUSION_TOP = {"small": 0.025, "moderate": -0.035, "large": -0.10}  # fluid top vs the dome height
_HEART_CENTRE, _HEART_HEIGHT = (0.54, 0.60), 0.125
_CARDIOMEGALY = (0.225, 0.02)  # half-width: minimum, spread
_FRACTURE = (0.385, 0.44)  # fracture line at |x - 0.5| = 0.385 (lateral chest wall), centred on y = 0.44
_RIB_SPACING = 0.072
_DEVICE_PATHS = {
    "ett": ((0.5, 0.0), (0.5, 0.27)),
    "central_line": ((0.42, 0.0), (0.43, 0.14), (0.455, 0.25), (0.46, 0.36)),
    "ng_tube": ((0.5, 0.0), (0.505, 0.30), (0.52, 0.66), (0.57, 0.77), (0.64, 0.80)),
}


def _lung(film: _Film, side: str, dome: float) -> Shape:
    """Alpha of one lung field: an ellipse cut by the hemidiaphragm, which drops laterally into
    the costophrenic recess."""
    cx, cy = _mirror(side, _LUNG_CENTRE[0]), _LUNG_CENTRE[1]
    ax, ay = _LUNG_AXES
    found = film.window(cx - ax - 0.01, cx + ax + 0.01, cy - ay - 0.01, dome + _RECESS_DEPTH * 1.6)
    assert found is not None
    block, x, y = found
    edge = 0.008
    r = np.sqrt(np.square((x - cx) / ax) + np.square((y - cy) / ay))
    alpha = np.clip((1.0 - r) * (ax / edge) + 0.5, 0.0, 1.0)
    lateral = (_DOME_X - x) if side == "right" else (x - (1.0 - _DOME_X))
    diaphragm = dome + _RECESS_DEPTH * np.square(np.maximum(lateral, 0.0) / _RECESS_WIDTH)
    alpha *= np.clip((diaphragm - y) / edge + 0.5, 0.0, 1.0)
    return block, alpha


def _ribs(film: _Film, side: str, fracture: bool, jitter: float) -> Shape:
    """Posterior ribs as a periodic band pattern that droops laterally, with a step (fracture)."""
    lo, hi = (0.04, 0.45) if side == "right" else (0.55, 0.96)
    found = film.window(lo, hi, 0.11, 0.84)
    assert found is not None
    block, x, y = found
    s = np.abs(x - 0.5)  # distance from the spine
    curve = 0.9 * np.square(s) - 0.15 * s
    shift = 0.0
    if fracture:
        # Lateral to the fracture line the rib fragment is displaced down by half a spacing,
        # fading out above and below the fracture so only the broken rib steps.
        line_s, centre = _FRACTURE
        beyond = np.clip((s - line_s) / 0.004 + 0.5, 0.0, 1.0)
        rows = np.clip(1.0 - np.abs(y - (centre + 0.004 * jitter)) / 0.04, 0.0, 1.0)
        shift = (0.5 * _RIB_SPACING) * beyond * np.clip(rows * 2.0, 0.0, 1.0)
    phase = (y - curve - shift) * (2 * np.pi / _RIB_SPACING)
    alpha = np.clip((np.cos(phase) - 0.45) * 2.5, 0.0, 1.0)
    fade_x = np.clip((s - 0.07) / 0.03, 0.0, 1.0) * np.clip((0.46 - s) / 0.02, 0.0, 1.0)
    fade_y = np.clip((y - 0.11) / 0.04, 0.0, 1.0) * np.clip((0.84 - y) / 0.05, 0.0, 1.0)
    alpha = alpha * (fade_x * fade_y)
    if fracture:
        gap = np.clip(1.5 - np.abs(s - line_s) / 0.007, 0.0, 1.0) * rows
        alpha = alpha - 2.0 * gap * np.maximum(alpha, 0.5)  # lucent fracture line, through and beside the rib
    return block, alpha


def _render_frontal(film: _Film, truth: SynthFindings, jitter: np.ndarray) -> None:
    a = film.anatomy
    markings, patch = _textures(film.size)
    film.blend(*_superellipse(film, 0.5, 0.58, 0.47, 0.62, 0.015), _SOFT)

    lungs: dict[str, Shape] = {}
    for side in SIDES:
        dome = a.dome_right if side == "right" else a.dome_left
        block, alpha = lungs[side] = _lung(film, side, dome)
        film.blend(block, alpha, _LUNG)
        film.px[block] += alpha * markings[a.texture][block]
        film.add(*_gaussian(film, _mirror(side, 0.41), 0.45, 0.022, 0.022), 0.10)  # hilar vessels

    # Parenchymal findings, each in its own territory (module docstring).
    for kind, side, lobe, amount in (
        ("consolidation", truth.consolidation_side, truth.consolidation_lobe, 0.34),
        ("opacity", truth.opacity_side, truth.opacity_lobe, 0.14),
    ):
        if side is None or lobe is None:
            continue
        bx, by = _BLOBS[lobe]
        cx, cy = _mirror(side, bx + 0.006 * jitter[1]), by + 0.006 * jitter[2]
        if kind == "consolidation":
            shape = _ellipse(film, cx, cy, 0.042, 0.045, 0.01)
            if shape is not None:
                film.add(*shape, amount)
        else:
            shape = _ellipse(film, cx, cy, 0.045, 0.048, 0.022)
            if shape is not None:
                block, alpha = shape
                film.add(block, alpha * (0.65 + 0.7 * patch[block]), amount)
    if truth.nodule_side is not None:
        shape = _ellipse(
            film, _mirror(truth.nodule_side, _NODULE[0]), _NODULE[1] + 0.004 * jitter[3], 0.018, 0.018, 0.005
        )
        if shape is not None:
            film.add(*shape, 0.36)
    if truth.atelectasis_side is not None:
        lateral, medial, band_y = _BAND
        x0, x1 = sorted((_mirror(truth.atelectasis_side, lateral), _mirror(truth.atelectasis_side, medial)))
        band_y += 0.004 * jitter[4]
        found = film.window(x0, x1, band_y - 0.02, band_y + 0.02)
        if found is not None:
            block, x, y = found
            across = np.clip((0.009 - np.abs(y - band_y)) / 0.004 + 0.5, 0.0, 1.0)
            along = np.clip(np.minimum(x - x0, x1 - x) / 0.015, 0.0, 1.0)
            film.add(block, across * along, 0.30)
    for side in SIDES:
        block, lung_alpha = lungs[side]
        x, y = film.xs[None, block[1]], film.ys[block[0], None]
        if truth.edema is not None:
            ex, ey = _mirror(side, _EDEMA_CENTRE[0]), _EDEMA_CENTRE[1]
            haze = np.exp(-0.5 * np.square((y - ey) / _EDEMA_SIGMA[1])) * np.exp(
                -0.5 * np.square((x - ex) / _EDEMA_SIGMA[0])
            )
            film.add(block, haze * lung_alpha, _EDEMA_AMPLITUDE[truth.edema] * (1.0 + 0.05 * jitter[6]))
        if truth.effusion_side in (side, "bilateral") and truth.effusion_size is not None:
            dome = a.dome_right if side == "right" else a.dome_left
            top = dome + _EFFUSION_TOP[truth.effusion_size] + 0.004 * jitter[5]
            inward = np.maximum(
                (x - _EFFUSION_LATERAL_X) if side == "right" else ((1.0 - _EFFUSION_LATERAL_X) - x), 0.0
            )
            meniscus = top + 0.18 * np.square(inward / 0.30)  # fluid climbs the lateral chest wall
            fluid = np.clip((y - meniscus) / 0.012 + 0.5, 0.0, 1.0) * lung_alpha
            film.blend(block, fluid, _FLUID)
        if truth.pneumothorax_side == side:
            cx, cy = _mirror(side, _COLLAPSED_CENTRE[0]), _COLLAPSED_CENTRE[1]
            ax, ay = _COLLAPSED_AXES
            r = np.sqrt(np.square((x - cx) / ax) + np.square((y - cy) / ay))
            apical = np.clip((0.36 - y) / 0.04, 0.0, 1.0) * lung_alpha
            outside = np.clip((r - 1.0) * (ax / 0.006) + 0.5, 0.0, 1.0)
            film.blend(block, outside * apical, _AIR)
            pleural_line = np.clip(1.0 - np.abs(r - 1.0) * (ax / 0.007), 0.0, 1.0)
            film.add(block, pleural_line * apical, 0.26)

    # Ribs, then what lies in front of them on the film: mediastinum, trachea, aortic knob, heart.
    for side in SIDES:
        film.add(*_ribs(film, side, truth.fracture_side == side, float(jitter[7])), 0.10)
    found = film.window(0.44, 0.56, 0.0, 0.66)
    assert found is not None
    block, x, y = found
    mediastinum = np.clip((0.055 - np.abs(x - 0.5)) / 0.008 + 0.5, 0.0, 1.0) * np.clip(
        (0.63 - y) / 0.02, 0.0, 1.0
    )
    film.blend(block, mediastinum, _MEDIASTINUM)
    spine = np.clip((0.025 - np.abs(x - 0.5)) / 0.006 + 0.5, 0.0, 1.0) * (
        np.cos(y * (2 * np.pi / 0.045)) > 0.55
    )
    film.add(block, spine, 0.06)
    for shape in _polyline(film, ((0.5, 0.0), (0.5, 0.33)), 0.014, 0.005):
        film.blend(*shape, 0.30)
    for shape in _polyline(film, ((0.5, 0.33), (0.455, 0.385)), 0.008, 0.004) + _polyline(
        film, ((0.5, 0.33), (0.55, 0.39)), 0.008, 0.004
    ):
        film.blend(*shape, 0.32)
    knob = _ellipse(film, 0.555, 0.32, 0.035, 0.03, 0.008)
    assert knob is not None
    film.blend(*knob, _MEDIASTINUM)
    half_width = a.heart
    if truth.cardiomegaly:
        half_width = _CARDIOMEGALY[0] + _CARDIOMEGALY[1] * abs(float(jitter[0]))
    heart = _ellipse(film, _HEART_CENTRE[0], _HEART_CENTRE[1], half_width, _HEART_HEIGHT, 0.008)
    assert heart is not None
    film.blend(*heart, _HEART)
    bubble = _ellipse(film, 0.65, a.dome_left + 0.06, 0.045, 0.022, 0.008)
    if bubble is not None:
        film.blend(*bubble, 0.24)
    for points in (((0.14, 0.155), (0.45, 0.115)), ((0.86, 0.155), (0.55, 0.115))):
        for shape in _polyline(film, points, 0.011, 0.005):
            film.add(*shape, 0.10)
    if truth.device is not None:
        for shape in _polyline(film, _DEVICE_PATHS[truth.device], 0.007, 0.004):
            film.lighten(*shape, _DEVICE)


# Lateral landmarks (anterior on the image's left, posterior on the right).
_LAT_LUNG_CENTRE, _LAT_LUNG_AXES = (0.52, 0.60), (0.32, 0.48)
_LAT_BLOBS = {"upper": (0.44, 0.30), "lower": (0.68, 0.62)}
_LAT_EFFUSION_TOP = {"small": 0.05, "moderate": -0.01, "large": -0.08}
_LAT_DEVICE_PATHS = {
    "ett": ((0.47, 0.0), (0.513, 0.30)),
    "central_line": ((0.44, 0.0), (0.445, 0.14), (0.46, 0.36)),
    "ng_tube": ((0.56, 0.0), (0.60, 0.30), (0.63, 0.62), (0.60, 0.80), (0.52, 0.85)),
}


def _render_lateral(film: _Film, truth: SynthFindings, jitter: np.ndarray) -> None:
    a = film.anatomy
    markings, patch = _textures(film.size)
    film.blend(*_superellipse(film, 0.5, 0.57, 0.40, 0.60, 0.015), _SOFT)
    dome = 0.5 * (a.dome_right + a.dome_left) - 0.01
    cx, cy = _LAT_LUNG_CENTRE
    ax, ay = _LAT_LUNG_AXES
    found = film.window(cx - ax - 0.01, cx + ax + 0.01, cy - ay - 0.01, 0.99)
    assert found is not None
    lung_block, x, y = found
    r = np.sqrt(np.square((x - cx) / ax) + np.square((y - cy) / ay))
    lung = np.clip((1.0 - r) * (ax / 0.008) + 0.5, 0.0, 1.0)
    diaphragm = (
        dome
        + 0.16 * np.square(np.maximum(x - 0.42, 0.0) / 0.38)
        + 0.03 * np.square(np.maximum(0.42 - x, 0.0) / 0.2)
    )
    lung *= np.clip((diaphragm - y) / 0.008 + 0.5, 0.0, 1.0)
    film.blend(lung_block, lung, _LUNG + 0.04)  # both lungs superimposed: a little denser
    film.px[lung_block] += lung * markings[a.texture][lung_block]
    film.add(*_gaussian(film, 0.53, 0.45, 0.03, 0.03), 0.10)

    for kind, lobe, amount in (
        ("consolidation", truth.consolidation_lobe, 0.30),
        ("opacity", truth.opacity_lobe, 0.15),
    ):
        if lobe is None:
            continue
        bx, by = _LAT_BLOBS[lobe]
        shape = _ellipse(
            film,
            bx + 0.006 * jitter[1],
            by + 0.006 * jitter[2],
            0.05,
            0.05,
            0.012 if kind == "consolidation" else 0.025,
        )
        if shape is not None:
            block, alpha = shape
            film.add(block, alpha if kind == "consolidation" else alpha * (0.65 + 0.7 * patch[block]), amount)
    if truth.nodule_side is not None:
        shape = _ellipse(film, 0.60, 0.46 + 0.004 * jitter[3], 0.018, 0.018, 0.005)
        if shape is not None:
            film.add(*shape, 0.30)
    if truth.atelectasis_side is not None:
        found = film.window(0.58, 0.76, 0.38, 0.42)
        if found is not None:
            block, bx_, by_ = found
            band_y = 0.40 + 0.004 * jitter[4]
            across = np.clip((0.009 - np.abs(by_ - band_y)) / 0.004 + 0.5, 0.0, 1.0)
            along = np.clip(np.minimum(bx_ - 0.58, 0.76 - bx_) / 0.015, 0.0, 1.0)
            film.add(block, across * along, 0.26)
    if truth.edema is not None:
        haze = np.exp(-0.5 * np.square((y - 0.45) / 0.08)) * np.exp(-0.5 * np.square((x - 0.53) / 0.08))
        film.add(lung_block, haze * lung, _EDEMA_AMPLITUDE[truth.edema] * (1.0 + 0.05 * jitter[6]))
    if truth.effusion_side is not None and truth.effusion_size is not None:
        top = dome + _LAT_EFFUSION_TOP[truth.effusion_size] + 0.004 * jitter[5]
        if truth.effusion_side == "bilateral":
            top -= 0.02
        meniscus = top + 0.20 * np.square(np.maximum(0.82 - x, 0.0) / 0.35)  # climbs the posterior wall
        film.blend(lung_block, np.clip((y - meniscus) / 0.012 + 0.5, 0.0, 1.0) * lung, _FLUID)

    half_width = a.heart_lateral + (0.07 + 0.015 * abs(float(jitter[0])) if truth.cardiomegaly else 0.0)
    heart = _ellipse(film, 0.37, 0.64, half_width, 0.15, 0.008)
    assert heart is not None
    film.blend(*heart, _HEART - 0.06)
    found = film.window(0.80, 0.93, 0.0, 1.0)
    assert found is not None
    block, x, y = found
    column = np.clip((0.05 - np.abs(x - 0.865)) / 0.008 + 0.5, 0.0, 1.0)
    discs = 1.0 - 0.35 * (np.cos(y * (2 * np.pi / 0.055)) > 0.8)
    film.blend(block, column * discs, _MEDIASTINUM)
    for shape in _polyline(film, ((0.47, 0.0), (0.52, 0.36)), 0.016, 0.005):
        film.blend(*shape, 0.28)
    for shape in _polyline(film, ((0.15, 0.22), (0.19, 0.60)), 0.012, 0.005):
        film.add(*shape, 0.10)
    if truth.device is not None:
        for shape in _polyline(film, _LAT_DEVICE_PATHS[truth.device], 0.007, 0.004):
            film.lighten(*shape, _DEVICE)


def render_views(
    truth: SynthFindings,
    *,
    seed: int | Sequence[int],
    image_size: int = 112,
    views: Sequence[str] = ("PA", "LATERAL"),
    anatomy_seed: int | Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Render ``truth`` as grayscale uint8 films (view -> (image_size, image_size) array).

    Deterministic: the same arguments give the same pixels. ``anatomy_seed`` (default ``seed``)
    draws the patient's build and exposure; ``seed`` draws the film's noise and the small position
    jitter of findings. Both are drawn *before* and independently of the findings (a fixed number of
    draws per view), so two truths rendered with the same seeds differ only where their findings
    differ: the property the signature tests rely on. PA and AP share one geometry."""
    for view in views:
        _one_of("view", view, RENDER_VIEWS)
    anatomy_rng = np.random.default_rng(
        [*np.atleast_1d(anatomy_seed if anatomy_seed is not None else seed), 1]
    )
    image_rng = np.random.default_rng([*np.atleast_1d(seed), 2])
    anatomy = _draw_anatomy(anatomy_rng)
    out: dict[str, np.ndarray] = {}
    for view in views:
        noise = image_rng.standard_normal((image_size, image_size), dtype=np.float32)
        jitter = image_rng.uniform(-1.0, 1.0, _JITTER_SLOTS)
        film = _Film(image_size, anatomy, _AIR)
        if view == "LATERAL":
            _render_lateral(film, truth, jitter)
        else:
            _render_frontal(film, truth, jitter)
        pixels = film.px
        pixels *= anatomy.gain * 255.0
        pixels += anatomy.bias * 255.0
        noise *= _NOISE_SIGMA * 255.0
        pixels += noise
        np.clip(pixels, 0.0, 255.0, out=pixels)
        out[view] = pixels.astype(np.uint8)
    return out


# ---------------------------------------------------------------------------------------------
# Studies
# ---------------------------------------------------------------------------------------------


class SynthStudy(NamedTuple):
    """One generated study and its films (manifest-relative path -> uint8 array; empty when
    generated with ``render=False``)."""

    study: Study
    images: dict[str, np.ndarray]


# Random streams of study i: default_rng([seed, i, stream]).
_TRUTH_STREAM, _REPORT_STREAM, _PRIOR_STREAM, _PRIOR_REPORT_STREAM = 0, 1, 2, 3
_FIRST_DAY = _dt.date(2015, 1, 1)
_INDICATIONS = (
    "Cough.",
    "Shortness of breath.",
    "Chest pain.",
    "Fever.",
    "Dyspnea.",
    "Preoperative evaluation.",
    "Follow-up.",
    None,
)


def study_id(index: int) -> str:
    """``synth-000001`` for index 0 (1-based, six digits or more)."""
    return f"synth-{index + 1:06d}"


def _image_path(name: str, index: int, view: str) -> str:
    # 1,000 studies per folder keeps directory listings fast at 100k studies.
    return f"images/{index // 1000:04d}/{name}_{view.lower()}.png"


def synth_study(config: SynthConfig, index: int, *, render: bool = True) -> SynthStudy:
    """Study ``index`` of ``config``; independent of ``config.n`` and of generation order."""
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    truth_rng = np.random.default_rng([config.seed, index, _TRUTH_STREAM])
    truth = sample_findings(truth_rng, config.prevalence)
    split_u, view_u, day_u, indication_u = truth_rng.random(4)
    anatomy_seed, image_seed, prior_image_seed = (int(s) for s in truth_rng.integers(0, 2**63 - 1, 3))
    split = _choose(split_u, SPLITS, config.split_fractions)
    # Portable AP films are the rule for patients with tubes and lines (ICU), PA otherwise.
    frontal = "AP" if view_u < (0.7 if truth.device else 0.25) else "PA"
    views = (frontal, "LATERAL") if config.lateral else (frontal,)
    date = _FIRST_DAY + _dt.timedelta(days=int(day_u * 3000))
    name = study_id(index)

    prior_truth: SynthFindings | None = None
    prior: Prior | None = None
    images: dict[str, np.ndarray] = {}
    if config.with_priors:
        prior_rng = np.random.default_rng([config.seed, index, _PRIOR_STREAM])
        if prior_rng.random() < config.prior_probability:
            prior_truth = sample_prior_findings(prior_rng, truth)
            prior_date = date - _dt.timedelta(days=int(prior_rng.integers(7, 730)))
            prior_view = "AP" if prior_rng.random() < (0.7 if prior_truth.device else 0.25) else "PA"
            prior_views = (prior_view, "LATERAL") if config.lateral else (prior_view,)
            prior_report = write_report(
                prior_truth, np.random.default_rng([config.seed, index, _PRIOR_REPORT_STREAM])
            )
            prior_name = f"{name}-prior"
            prior_paths = {v: _image_path(prior_name, index, v) for v in prior_views}
            prior = Prior(
                study_id=prior_name,
                images=tuple(
                    Image(path=p, view=v, image_id=f"{prior_name}-{v.lower()}")
                    for v, p in prior_paths.items()
                ),
                date=prior_date.isoformat(),
                findings=prior_report.findings,
                impression=prior_report.impression,
            )
            if render:
                films = render_views(
                    prior_truth,
                    seed=prior_image_seed,
                    image_size=config.image_size,
                    views=prior_views,
                    anatomy_seed=anatomy_seed,
                )
                images.update({prior_paths[v]: films[v] for v in prior_views})

    report = write_report(truth, np.random.default_rng([config.seed, index, _REPORT_STREAM]), prior_truth)
    paths = {v: _image_path(name, index, v) for v in views}
    if render:
        films = render_views(
            truth, seed=image_seed, image_size=config.image_size, views=views, anatomy_seed=anatomy_seed
        )
        images = {**{paths[v]: films[v] for v in views}, **images}
    technique = (
        f"{frontal} and lateral views of the chest." if config.lateral else f"{frontal} view of the chest."
    )
    study = Study(
        study_id=name,
        dataset=DATASET,
        split=split,
        images=tuple(Image(path=p, view=v, image_id=f"{name}-{v.lower()}") for v, p in paths.items()),
        patient_id=f"synth-p{index + 1:06d}",
        date=date.isoformat(),
        indication=_INDICATIONS[int(indication_u * len(_INDICATIONS))],
        comparison=f"Chest radiograph of {prior.date}." if prior is not None else "None.",
        technique=technique,
        findings=report.findings,
        impression=report.impression,
        prior=prior,
        labels=report.labels,
        meta={
            "synth": {
                "truth": truth.to_dict(),
                "prior_truth": prior_truth.to_dict() if prior_truth is not None else None,
                "changes": temporal_changes(prior_truth, truth) if prior_truth is not None else None,
                "seed": config.seed,
                "index": index,
                "image_size": config.image_size,
            }
        },
    )
    return SynthStudy(study, images)


def generate_studies(
    config: SynthConfig, *, render: bool = True, start: int = 0, stop: int | None = None
) -> Iterator[SynthStudy]:
    """Studies ``start`` .. ``stop - 1`` (default: all ``config.n``), in order. ``render=False``
    skips the films (reports, labels and manifests only: about 20x faster)."""
    stop = config.n if stop is None else min(stop, config.n)
    for index in range(start, stop):
        yield synth_study(config, index, render=render)


def truth_of(study: Study) -> SynthFindings:
    """The ground truth stored in a SynthCXR study's ``meta``."""
    return SynthFindings.from_dict(study.meta["synth"]["truth"])


_PNG_COMPRESS_LEVEL = 1  # zlib level: the noise barely compresses, and level 1 is 3x faster than 6


def write_synthcxr(
    out_dir: str | Path, config: SynthConfig, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Write SynthCXR under ``out_dir``: ``images/`` (PNG), ``train.jsonl`` / ``validate.jsonl`` /
    ``test.jsonl`` (the manifest format of the real adapters, image paths relative to ``out_dir``)
    and ``synthcxr.json`` (the config and a summary, also returned). ``progress(done)`` is called
    every 100 studies and at the end. Same config -> byte-identical manifests and images
    (``synthcxr.json`` differs only by its timings)."""
    from PIL import Image as PILImage

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[Study]] = {s: [] for s in SPLITS}
    finding_counts = dict.fromkeys(FINDINGS, 0)
    label_counts = dict.fromkeys(CHEXPERT_14, 0)
    normal = with_prior = image_count = 0
    folders: set[Path] = set()
    for done, (study, images) in enumerate(generate_studies(config), start=1):
        for relative, pixels in images.items():
            path = out / relative
            if path.parent not in folders:
                path.parent.mkdir(parents=True, exist_ok=True)
                folders.add(path.parent)
            PILImage.fromarray(pixels).save(path, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
        image_count += len(images)
        by_split[study.split].append(study)
        truth = SynthFindings.from_dict(study.meta["synth"]["truth"])
        for finding in truth.present:
            finding_counts[finding] += 1
        for name, value in (study.labels or {}).items():
            label_counts[name] += value == 1
        normal += truth.is_normal
        with_prior += study.prior is not None
        if progress is not None and (done % 100 == 0 or done == config.n):
            progress(done)
    for split, studies in by_split.items():
        write_manifest(out / f"{split}.jsonl", studies)
    seconds = time.perf_counter() - started
    n = config.n
    summary: dict[str, Any] = {
        "dataset": DATASET,
        "out_dir": str(out),
        "config": asdict(config),
        "studies": n,
        "images": image_count,
        "splits": {split: len(studies) for split, studies in by_split.items()},
        "manifests": {split: f"{split}.jsonl" for split in SPLITS},
        "prevalence": {f: round(c / n, 4) for f, c in finding_counts.items()},
        "label_positive_rate": {name: round(c / n, 4) for name, c in label_counts.items()},
        "normal_fraction": round(normal / n, 4),
        "with_prior_fraction": round(with_prior / n, 4),
        "seconds": round(seconds, 3),
        "studies_per_s": round(n / seconds, 1) if seconds > 0 else None,
    }
    (out / "synthcxr.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
