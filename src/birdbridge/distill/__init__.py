"""Distillation of the audio encoder onto frozen BioCLIP-2 species text embeddings.

Submodules:

- ``loss``: contrastive (multi-positive / deduplicated InfoNCE, distributed like
  open_clip's ``ClipLoss``) and species-softmax objectives, plus the learnable
  ``LogitScale`` temperature holder.

The per-species teacher text embeddings it trains against are computed once and cached by
:mod:`birdbridge.encoders.species_text`.
"""
