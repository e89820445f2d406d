"""The 14 CheXpert observations (Irvin et al., AAAI 2019), in the order CheXbert reports them.

Shared vocabulary of labels: SynthCXR ground truth (data), label annotators and the CheXbert-F1
metrics. Values everywhere: 1 positive, 0 negative, -1 uncertain, absent = not mentioned.
``CHEXPERT_5`` is the subset behind the "-5" metrics (METRICS.md)."""

from __future__ import annotations

CHEXPERT_14: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)

CHEXPERT_5: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
