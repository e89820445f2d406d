"""The RL step's edit engine (edits/engine.py) on the offline annotators: edits equal plan + apply,
references are analysed once, a failing analysis leaves its rollout unedited, and the server
analyser gives the same edits as the in-process one."""

from __future__ import annotations

import numpy as np
import pytest

from editgrpo.annotators.analysis import analyse
from editgrpo.annotators.embeddings import build_embedder
from editgrpo.annotators.entities import LexiconEntityExtractor
from editgrpo.edits.apply import apply_edits
from editgrpo.edits.engine import RolloutEditor, build_local_analyser, local_analyser, server_analyser
from editgrpo.edits.plan import plan_edits

REFERENCE = "Mild cardiomegaly. Small right pleural effusion. No pneumothorax."
ROLLOUTS = [
    "Heart size is normal. Small right pleural effusion. No pneumothorax.",  # a wrong sentence
    "Mild cardiomegaly. No pneumothorax.",  # a missing finding
    REFERENCE,  # nothing to edit
]


def test_edits_equal_plan_then_apply_and_are_seeded() -> None:
    extractor, embedder = LexiconEntityExtractor(), build_embedder("lexical")
    editor = RolloutEditor(local_analyser(extractor, embedder))
    edited = editor.edit(ROLLOUTS, [REFERENCE] * 3, np.random.default_rng(0))
    (ref,) = analyse([REFERENCE], extractor, embedder)
    rng = np.random.default_rng(0)
    for text, result in zip(ROLLOUTS, edited, strict=True):
        (rollout,) = analyse([text], extractor, embedder)
        expected = apply_edits(rollout.sentences, ref.sentences, plan_edits(rollout, ref, rng=rng))
        assert result == expected
    assert [r.changed for r in edited] == [True, True, False]
    # The lexical embedder does not tie "heart size is normal" to cardiomegaly: the sentence is a
    # false positive no reference sentence matches, and rule (c) deletes it.
    assert edited[0].text == "Small right pleural effusion. No pneumothorax."
    assert edited[1].text.endswith("Small right pleural effusion.")
    again = RolloutEditor(local_analyser(extractor, embedder)).edit(
        ROLLOUTS, [REFERENCE] * 3, np.random.default_rng(0)
    )
    assert again == edited


def test_each_reference_is_analysed_once() -> None:
    seen: list[str] = []
    inner = build_local_analyser()

    def counting(texts: list[str]):
        seen.extend(texts)
        return inner(texts)

    editor = RolloutEditor(counting)
    for step in range(3):
        editor.edit(ROLLOUTS, [REFERENCE] * 3, np.random.default_rng(step))
    assert seen.count(REFERENCE) == 1 + 3  # once as a reference, then only as the third rollout
    assert len(editor.references([REFERENCE, "No acute findings."])) == 2


def test_a_failing_analysis_leaves_the_rollout_unedited_and_counts() -> None:
    inner = build_local_analyser()

    def fragile(texts: list[str]):
        if any("BOOM" in t for t in texts):
            raise RuntimeError("annotator crashed")
        return inner(texts)

    editor = RolloutEditor(fragile)
    out = editor.edit(["BOOM report.", ROLLOUTS[1]], [REFERENCE] * 2, np.random.default_rng(0))
    assert out[0].changed is False and out[0].text == "BOOM report." and out[0].ops == ()
    assert out[1].changed is True
    assert editor.failures == 1
    with pytest.raises(ValueError, match="2 rollouts but 1 references"):
        editor.edit(ROLLOUTS[:2], [REFERENCE], np.random.default_rng(0))


@pytest.mark.parametrize("rule", ["paper", "release"])
def test_server_analyser_gives_the_in_process_edits(rule: str) -> None:
    from editgrpo.rewards.client import RewardClient
    from editgrpo.rewards.composite import CompositeReward
    from editgrpo.rewards.server import RewardService
    from fixtures.servers import thread_server

    with thread_server(RewardService(CompositeReward())) as url, RewardClient(url) as client:
        remote = RolloutEditor(server_analyser(client), rule=rule).edit(
            ROLLOUTS, [REFERENCE] * 3, np.random.default_rng(3)
        )
    local = RolloutEditor(build_local_analyser(), rule=rule).edit(
        ROLLOUTS, [REFERENCE] * 3, np.random.default_rng(3)
    )
    assert [r.text for r in remote] == [r.text for r in local]
    assert [r.spans for r in remote] == [r.spans for r in local]


def test_the_release_rule_edits_analyses_in_the_release_convention() -> None:
    # The editor re-cuts analyses for the release: regex sentences ("vs." ends one), and the second
    # "pleural effusion" is filed under the first sentence containing the string (the release's
    # server); its edits are plan + apply on analyses in that convention.
    extractor, embedder = LexiconEntityExtractor(), build_embedder("lexical")
    editor = RolloutEditor(local_analyser(extractor, embedder), rule="release")
    text = "No change vs. prior. Pleural effusion resolved. Large pleural effusion."
    [analysis] = editor.references([text])
    assert analysis.convention == "release"
    assert [s.text for s in analysis.sentences][:2] == ["No change vs.", "prior."]
    effusions = [e for e in analysis.entities if e.text.lower() == "pleural effusion"]
    assert len(effusions) == 2 and {e.sentence for e in effusions} == {2}
    rollout = "Small pleural effusion. Effusion is small. Large pleural effusion."
    [edited] = editor.edit([rollout], [REFERENCE], np.random.default_rng(0))
    (x,) = analyse([rollout], extractor, embedder, convention="release")
    (y,) = analyse([REFERENCE], extractor, embedder, convention="release")
    plan = plan_edits(x, y, rule="release", rng=np.random.default_rng(0))
    assert edited == apply_edits(x.sentences, y.sentences, plan)
    assert RolloutEditor(local_analyser(extractor, embedder)).convention == "radiology"
