"""Datasets and audio/image I/O. Every loader yields :class:`~birdbridge.data.records.Collection`."""
