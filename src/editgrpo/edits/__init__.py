"""Post-rollout sentence edits (EDITGRPO.md section 3), pure: ``plan`` turns the analyses of a rollout
and its reference (``annotators.analysis.TextAnalysis``) into an ``EditPlan`` of replace / delete /
append ops by one of the registered rules (``plan.EDIT_RULES``: ``paper``, ``release``,
``radgraph``); ``apply`` turns a plan into the edited text with character spans saying which
characters the policy wrote and which were inserted from the reference.

Layering: imports ``text`` and the analysis types of ``annotators`` only; running the annotators is
the caller's job (``training.rollout_edits``)."""
