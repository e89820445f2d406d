"""Evaluation: generate reports for a manifest (``generate``), score a predictions file and compare
two (``evaluate``), and the statistics that put uncertainty on metric values (``stats``: bootstrap
confidence intervals, paired randomisation).

This layer imports rewards, metrics, annotators, data, text and config, never training or models:
``generate`` takes the batch generator as a function, which the CLI builds from ``editgrpo.models``.
"""
