"""Architecture registry: importing this package registers every family."""
from study.models import (  # noqa: F401  (registration side effects)
    brc, gated_conv, indrnn, layernorm_lstm, linear_attention, lmu, lmu_cell, rnn, sparse_attention, ssm,
    stable, tcn, tova, transformer, transformer_xl, universal_transformer, wavenet)
from study.models.base import ModelConfig, SequenceModel, detach_state
from study.registry import IO, MODELS

__all__ = ["IO", "MODELS", "ModelConfig", "SequenceModel", "build_model", "detach_state"]


def build_model(arch: str, cfg: ModelConfig, io: IO, seq_len: int, window: int | None) -> SequenceModel:
    return MODELS.get(arch).cls(cfg, io, seq_len, window)
