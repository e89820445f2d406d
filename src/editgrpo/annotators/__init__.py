"""Annotators: turn report text into annotations (labels, entities, vectors); heavy models load lazily."""
