"""CheXbert: our ``chexbert`` labeler against f1chexbert 0.0.2 on the same random-weight files.

f1chexbert runs unmodified in its own venv (it calls ``tokenizer.encode_plus``, which transformers 5
removed, so the venv overlays transformers 4.57), offline, reading ``chexbert.pth`` from
``$XDG_CACHE_HOME/chexbert/`` (appdirs ``user_cache_dir("chexbert")``) and bert-base-uncased's
config.json + vocab.txt from the Hugging Face cache. Our labeler reads the same two files.
Compared per report: the 14 raw class indices, the "rrg" binary vectors, and every F1 variant of
``forward`` (micro / macro / weighted over 14 and 5 labels, per-label F1, the 5-label accuracy).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from editgrpo.annotators.chexbert_model import CheXbertLabeler
from editgrpo.metrics.chexbert_f1 import chexbert_scores, corpus_f1
from editgrpo.text.observations import CHEXPERT_14
from parity.common import (
    EDGE_CASES,
    chexbert_files,
    iu_reports,
    offline_env,
    python_of,
    run_reference,
    synth_reports,
)

TOL = 1e-6
# A report longer than 512 WordPiece tokens: both sides cut it at [CLS] + 510 + [SEP].
LONG = " ".join(["Stable small left pleural effusion with adjacent atelectasis."] * 80)


def rrg(vector: dict) -> list[int]:
    """f1chexbert's "rrg" mapping of one label vector: positive and uncertain -> 1, else 0."""
    return [1 if vector[name] in (1, -1) else 0 for name in CHEXPERT_14]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("chexbert-parity")
    refs, hyps = synth_reports(40, seed=0), synth_reports(40, seed=1)
    iu = iu_reports(60) or []
    texts = [*refs, *hyps, *iu, *EDGE_CASES, LONG, "", "   \n\t "]
    files = chexbert_files(out, texts)
    ours = CheXbertLabeler(
        str(files["checkpoint"]), tokenizer=str(files["tokenizer"]), device="cpu", batch_size=8
    )
    reference = run_reference(
        python_of("f1chexbert"),
        "ref_f1chexbert.py",
        {"texts": texts, "hyps": hyps, "refs": refs},
        offline_env(files["hub"], files["xdg"]),
    )
    return {"texts": texts, "refs": refs, "hyps": hyps, "ours": ours, "reference": reference, "iu": len(iu)}


def test_class_indices_and_rrg_vectors_identical_per_report(setup: dict) -> None:
    ours = setup["ours"].predict_classes(setup["texts"])
    vectors = setup["ours"].label(setup["texts"])
    for text, mine, theirs, vector, their_rrg in zip(
        setup["texts"], ours, setup["reference"]["classes"], vectors, setup["reference"]["rrg"], strict=True
    ):
        assert mine == theirs, text
        assert rrg(vector) == their_rrg, text
    # The fixture is not degenerate: several heads take several classes over the corpus.
    assert sum(len({c[h] for c in ours}) > 1 for h in range(14)) >= 5


def test_every_f1_variant_equal(setup: dict) -> None:
    labeler = setup["ours"]
    hyps, refs = labeler.label(setup["hyps"]), labeler.label(setup["refs"])
    theirs = setup["reference"]["scores"]
    mine = chexbert_scores(hyps, refs)
    cr, cr_5 = theirs["cr"], theirs["cr_5"]
    assert mine["micro_f1_14"] == pytest.approx(cr["micro avg"]["f1-score"], abs=TOL)
    assert mine["micro_precision_14"] == pytest.approx(cr["micro avg"]["precision"], abs=TOL)
    assert mine["micro_recall_14"] == pytest.approx(cr["micro avg"]["recall"], abs=TOL)
    assert mine["macro_f1_14"] == pytest.approx(cr["macro avg"]["f1-score"], abs=TOL)
    assert mine["weighted_f1_14"] == pytest.approx(cr["weighted avg"]["f1-score"], abs=TOL)
    assert mine["micro_f1_5"] == pytest.approx(cr_5["micro avg"]["f1-score"], abs=TOL)
    assert mine["macro_f1_5"] == pytest.approx(cr_5["macro avg"]["f1-score"], abs=TOL)
    assert mine["weighted_f1_5"] == pytest.approx(cr_5["weighted avg"]["f1-score"], abs=TOL)
    assert mine["accuracy_5"] == pytest.approx(theirs["accuracy"], abs=TOL)
    per_label = corpus_f1(hyps, refs)["per_label"]
    for name in CHEXPERT_14:
        assert per_label[name]["f1"] == pytest.approx(cr[name]["f1-score"], abs=TOL), name
        assert per_label[name]["support"] == cr[name]["support"], name


def test_iu_xray_part_ran_when_the_archive_is_present(setup: dict) -> None:
    from parity.common import IU_ARCHIVE

    if not Path(IU_ARCHIVE).is_file():
        pytest.skip(f"IU X-Ray reports not present at {IU_ARCHIVE}")
    assert setup["iu"] == 60
