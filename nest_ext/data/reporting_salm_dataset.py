"""NeMo's ``SALMDataset`` with every conversation it drops for bad audio reported by path.

NeMo's ``SALMDataset`` loads a batch's audio fault-tolerantly (lhotse ``AudioSamples``), tokenises the prompt
and builds the loss mask; a conversation whose audio fails to load is dropped silently. This subclass names
each dropped one -- the file and why (``missing file``, ``empty file``, ...), or ``TAR:KEY`` for audio from
shards -- through ``BadAudioReport``, and under ``on_bad_audio='error'`` raises instead. Needs the ``llm``
extra (NeMo's speechlm2 collection imports peft).
"""
from typing import Optional, Tuple

from nemo.collections.speechlm2.data import SALMDataset

from nest_ext.data.bad_audio import BadAudioReport, check_audio_file


def describe_bad_audio(cut) -> Tuple[str, str]:
    """(what to name, reason) for a cut whose audio failed to load."""
    source = cut.recording.sources[0] if getattr(cut, "has_recording", False) else None
    if source is not None and source.type == "file":
        return source.source, check_audio_file(source.source) or "audio could not be decoded"
    origin = (cut.custom or {}).get("tar_origin")
    return (f"{origin}:{cut.recording_id}" if origin else cut.id), "audio could not be decoded"


class ReportingSALMDataset(SALMDataset):
    """``SALMDataset(tokenizer)`` plus ``bad_audio``, a :class:`BadAudioReport` named ``name``."""

    def __init__(self, tokenizer, on_bad_audio: str = "skip", name: str = "SALM data"):
        super().__init__(tokenizer)
        self.bad_audio = BadAudioReport(on_bad_audio, name=name)

    def __getitem__(self, conversations) -> Optional[dict]:
        batch = super().__getitem__(conversations)
        kept = set() if batch is None else {c.id for c in batch["conversations"]}
        for conversation in conversations:
            if conversation.id not in kept:
                for cut in conversation.list_cuts():
                    path, reason = describe_bad_audio(cut)
                    self.bad_audio.add(path, reason, where=f"conversation {conversation.id}", stage="load")
        return batch
