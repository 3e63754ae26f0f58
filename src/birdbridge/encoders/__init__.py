"""Encoders: the frozen image-text teacher, the CLAP audio student (+ head), BirdNET,
text encoders and species as text (``text``, ``species_text``), and builders for tiny
replicas of the real architectures."""
