"""Encoders: the frozen image-text teacher, the CLAP audio student (+ head), BirdNET,
and builders for tiny replicas of the real architectures."""
