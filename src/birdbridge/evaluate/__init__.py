"""Evaluation: ``birdbridge eval`` and "bring your own embeddings" scoring.

:mod:`.pipeline` shows ``birdbridge eval`` top to bottom (sweep → one run → phases → one
writer). ``score`` reads query/gallery parquet files and writes a results JSON. The metric
code is :mod:`birdbridge.metrics` (checked against scikit-learn and torchmetrics
in the tests).
"""
