"""Distillation of the audio encoder onto frozen BioCLIP-2 species text embeddings.

Submodules, top to bottom:

- ``train``: ``distill(collection, cfg, out_dir)``, the one entry point (Lightning Trainer,
  checkpoints, resume); ``config``: its :class:`TrainConfig` (``train:`` in YAML);
  ``presets``: named overrides (the demo's recipe).
- ``module``: the LightningModule (student + head + temperature, the optimisers and schedule).
- ``datamodule`` / ``data``: training items from a collection or shards, batches of waveforms.
- ``loss``: contrastive (multi-positive / deduplicated InfoNCE, distributed like
  open_clip's ``ClipLoss``) and species-softmax objectives, plus the learnable
  ``LogitScale`` temperature holder; ``clap_align``: the optional terms that keep the tower's
  CLAP audio–text alignment.
- ``standins``: the synthetic world's stand-in pre-training of tiny models (demo and eval).

The per-species teacher text embeddings it trains against are computed once and cached by
:mod:`birdbridge.encoders.species_text`.
"""
