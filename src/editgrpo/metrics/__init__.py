"""Pure scoring math on annotations (CheXbert F1, RadGraph F1, RaTEScore, lexical metrics)."""
