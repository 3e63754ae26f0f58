"""birdbridge: retrieve pictures of bird species from bird sound.

Distils an audio encoder (BioLingual, a CLAP model) onto the frozen text space of
an image-text model (BioCLIP-2), so recordings land near photos of their species
without ever training on audio-image pairs (arXiv 2602.00681).
"""

__version__ = "0.1.0"
