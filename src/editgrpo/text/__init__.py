"""Pure report-text logic: sections, sentences with offsets, evaluation cleaning (stdlib only)."""
