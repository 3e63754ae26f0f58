"""Loading HF CLAP models (BioLingual and any other ``ClapModel``) by id or directory."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelNotAvailableError
from . import hub
from .ids import DEFAULT_STUDENT, KNOWN_STUDENTS  # noqa: F401 - re-exported: the known CLAP students, the default



def _resolve(model_id: str | hub.ModelRef) -> str:
    m = hub.parse(model_id)
    if m.kind == "builtin":
        raise ModelNotAvailableError(f"{m.given!r} is not a CLAP model (it has its own loader)")
    if m.kind == "local":
        return str(hub.local_folder(m, "CLAP model", required=("config.json",)))
    hub.prepare_hub(m.given, m.ref, "config.json")
    return m.ref


def load_clap(model_id: str | hub.ModelRef = DEFAULT_STUDENT):
    """Return ``(ClapModel, ClapFeatureExtractor)``; refuse fused models and fusion extractors.

    BioLingual is a non-fused HTSAT. ``ClapFeatureExtractor()``'s own default truncation is
    ``fusion`` (4-channel features, htk mel): pairing that with a non-fused model would give
    features of the wrong meaning, so the pairing is checked here, at load time.
    """
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    ref = _resolve(model_id)
    model_id = str(model_id)  # as the user wrote it, for messages
    try:
        # Config and extractor first: a fused model is refused before its weights load.
        config = ClapConfig.from_pretrained(ref)
        fe = ClapFeatureExtractor.from_pretrained(ref)
        check_pairing(config.audio_config, fe, model_id)
        model = ClapModel.from_pretrained(ref, config=config)
    except (OSError, ValueError) as err:
        if isinstance(err, ModelNotAvailableError):
            raise
        if Path(ref).exists():
            raise ModelNotAvailableError(f"CLAP model {model_id!r} could not be loaded from {ref}: {err}") from err
        raise hub.not_available(model_id, ref, err) from err
    return model.eval(), fe


def load_clap_tokenizer(model_id: str = DEFAULT_STUDENT):
    """The tokenizer of the CLAP ``model_id``, for its text tower (:class:`.text.ClapTextEncoder`)."""
    from transformers import AutoTokenizer

    ref = _resolve(model_id)
    try:
        return AutoTokenizer.from_pretrained(ref)
    except (OSError, ValueError) as err:
        raise ModelNotAvailableError(f"CLAP model {model_id!r}: its tokenizer could not be loaded from {ref}: {err}") from err


def check_pairing(audio_config, fe, model_id: str = "") -> None:
    if getattr(audio_config, "enable_fusion", False):
        raise ModelNotAvailableError(
            f"{model_id or 'this CLAP model'} is a fused CLAP (enable_fusion=True); birdbridge embeds "
            "non-fused HTSAT models (like BioLingual) only, since fusion needs 4-channel features"
        )
    if fe.truncation != "rand_trunc":
        raise ModelNotAvailableError(
            f"{model_id or 'this CLAP model'}: its feature extractor uses truncation={fe.truncation!r}, "
            "but a non-fused model needs 'rand_trunc' (single-channel slaney mel features)"
        )
    if fe.feature_size != audio_config.num_mel_bins:
        raise ModelNotAvailableError(
            f"{model_id}: feature extractor has {fe.feature_size} mel bins but the audio model expects "
            f"{audio_config.num_mel_bins}"
        )
