"""``python -m birdbridge.cli`` (how torchrun and srun launch a verb)."""

from . import main

main()
