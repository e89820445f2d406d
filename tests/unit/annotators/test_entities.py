"""The offline `lexicon` entity extractor: RaTE entities, RadGraph graph, tokenisation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from editgrpo.annotators.entities import LexiconEntityExtractor, build_entity_extractor, radgraph_tokens


@pytest.fixture(scope="module")
def extractor() -> LexiconEntityExtractor:
    return LexiconEntityExtractor()


def _relations(report) -> set[tuple[str, str, str]]:
    return {(r.kind, report.graph[r.source].tokens, report.graph[r.target].tokens) for r in report.relations}


def test_issue_example(extractor: LexiconEntityExtractor) -> None:
    text = (
        "No pneumothorax or pleural effusion. Mild cardiomegaly. "
        "Patchy opacity in the left lower lobe, may represent atelectasis."
    )
    report = extractor.extract_one(text)
    rate = {e.text: e.rate_type for e in report.rate}
    assert rate["pneumothorax"] == "NON-ABNORMALITY" and rate["pleural effusion"] == "NON-ABNORMALITY"
    assert rate["cardiomegaly"] == "DISEASE" and rate["opacity"] == "ABNORMALITY"
    assert rate["left lower lobe"] == "ANATOMY"
    labels = {g.tokens: g.label for g in report.graph}
    assert labels["pneumothorax"] == labels["effusion"] == "OBS-DA"
    assert labels["cardiomegaly"] == labels["opacity"] == "OBS-DP"
    assert labels["atelectasis"] == "OBS-U" and labels["lobe"] == labels["pleural"] == "ANAT-DP"
    assert {
        ("modify", "Mild", "cardiomegaly"),
        ("located_at", "opacity", "lobe"),
        ("suggestive_of", "opacity", "atelectasis"),
        ("located_at", "effusion", "pleural"),
        ("modify", "left", "lobe"),
    } <= _relations(report)
    for entity in report.rate:
        assert text[entity.start : entity.end] == entity.text
    for entity in report.graph:
        assert text[entity.start : entity.end].replace(" ", "") == entity.tokens.replace(" ", "")


def test_radgraph_layout_and_token_indices(extractor: LexiconEntityExtractor) -> None:
    text = "The lungs are clear.\nSmall right effusion."
    report = extractor.extract_one(text)
    layout = report.to_radgraph()
    tokens = [t for t, _, _ in radgraph_tokens(text)]
    for entity in layout["entities"].values():
        assert " ".join(tokens[entity["start_ix"] : entity["end_ix"] + 1]) == entity["tokens"]
    assert ("located_at", "clear", "lungs") in _relations(report)
    assert ("modify", "Small", "effusion") in _relations(report)


def test_descriptor_after_copula_and_negated_descriptor(extractor: LexiconEntityExtractor) -> None:
    report = extractor.extract_one("The effusion is small. No acute cardiopulmonary abnormality.")
    assert ("modify", "small", "effusion") in _relations(report)
    labels = {g.tokens: g.label for g in report.graph}
    assert labels["acute"] == labels["abnormality"] == "OBS-DA"  # a descriptor takes its head's status
    assert ("located_at", "abnormality", "cardiopulmonary") in _relations(report)


def test_tokenisation_is_nltk_wordpunct() -> None:
    nltk_tokenize = pytest.importorskip("nltk.tokenize").wordpunct_tokenize
    text = "ET tube terminates 2 cm above the carina; bibasilar opacities (likely atelectasis).\n  L-sided?"
    assert [t for t, _, _ in radgraph_tokens(text)] == nltk_tokenize(" ".join(text.split()))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_tokenisation_matches_nltk_on_any_text(text: str) -> None:
    nltk_tokenize = pytest.importorskip("nltk.tokenize").wordpunct_tokenize
    assert [t for t, _, _ in radgraph_tokens(text)] == nltk_tokenize(text)


def test_batch_registry_and_errors(extractor: LexiconEntityExtractor, tmp_path) -> None:
    texts = ["Mild cardiomegaly.", "", "No effusion."]
    batch = extractor.extract(texts)
    assert [r.to_radgraph() for r in batch] == [extractor.extract_one(t).to_radgraph() for t in texts]
    assert batch[1].graph == [] and batch[1].rate == []
    assert build_entity_extractor("lexicon").extract(texts)[0].to_radgraph() == batch[0].to_radgraph()
    with pytest.raises(ValueError, match="valid: lexicon"):
        build_entity_extractor("scispacy")
    bad = tmp_path / "lexicon.txt"
    bad.write_text("[findings]\nopacity\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lexicon.txt:1: unknown category 'findings'"):
        LexiconEntityExtractor(lexicon=bad)


def test_lexicon_graphs_feed_the_radgraph_metric(extractor: LexiconEntityExtractor) -> None:
    """The extractor's radgraph layout is what metrics/radgraph_f1.py scores (one code path for
    our annotations and the radgraph package's)."""
    from editgrpo.metrics.radgraph_f1 import radgraph_f1_all_levels

    ref = extractor.extract_one("Mild cardiomegaly. Small left pleural effusion.").to_radgraph()
    same = extractor.extract_one("Mild cardiomegaly.\nSmall left pleural effusion.").to_radgraph()
    assert radgraph_f1_all_levels(same, ref) == (1.0, 1.0, 1.0)
    wrong = extractor.extract_one("Mild cardiomegaly. No pleural effusion.").to_radgraph()
    assert all(score < 1.0 for score in radgraph_f1_all_levels(wrong, ref))


def test_radgraph_package_output_converts_and_scores_the_same() -> None:
    """A report as the radgraph package returns it (RadGraph-XL label spelling), written here."""
    from editgrpo.annotators.entities import from_radgraph_output
    from editgrpo.metrics.radgraph_f1 import radgraph_f1_all_levels

    text = "Mild  cardiomegaly.\nNo effusion."
    output = {
        "text": "Mild cardiomegaly . No effusion .",
        "entities": {
            "1": {
                "tokens": "Mild",
                "label": "Observation::definitely present",
                "start_ix": 0,
                "end_ix": 0,
                "relations": [["modify", "2"]],
            },
            "2": {
                "tokens": "cardiomegaly",
                "label": "Observation::definitely present",
                "start_ix": 1,
                "end_ix": 1,
                "relations": [],
            },
            "3": {
                "tokens": "effusion",
                "label": "Observation::definitely absent",
                "start_ix": 4,
                "end_ix": 4,
                "relations": [],
            },
        },
    }
    report = from_radgraph_output(text, output)
    assert [(g.tokens, text[g.start : g.end]) for g in report.graph] == [
        ("Mild", "Mild"),
        ("cardiomegaly", "cardiomegaly"),
        ("effusion", "effusion"),
    ]
    assert [(r.kind, r.source, r.target) for r in report.relations] == [("modify", 0, 1)]
    converted = report.to_radgraph()
    assert radgraph_f1_all_levels(converted, output) == (1.0, 1.0, 1.0)
    assert radgraph_f1_all_levels(output, output) == radgraph_f1_all_levels(converted, converted)


def test_radgraph_backend_says_what_it_needs() -> None:
    import importlib.util

    from editgrpo.errors import UserError

    if importlib.util.find_spec("radgraph") is not None:
        pytest.skip("the radgraph package is installed here; its model would be loaded")
    with pytest.raises(UserError, match="pip install radgraph"):
        build_entity_extractor("radgraph")
