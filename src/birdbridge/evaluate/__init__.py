"""Evaluation: ``birdbridge eval`` and "bring your own embeddings" scoring.

The metric code is :mod:`birdbridge.retrieval.metrics` (checked against scikit-learn and
torchmetrics in the tests); ``score`` reads query/gallery parquet files and writes a results JSON.
"""
