"""Evaluation: retrieval / classification / soundscape metrics and "bring your own embeddings" scoring.

``metrics`` holds the numpy metric code (checked against scikit-learn and torchmetrics in
the tests); ``score`` reads query/gallery parquet files and writes a results JSON.
"""
