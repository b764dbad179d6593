"""The standard probe batch: seeded, mixed lengths, padding, both segment ids.

Contract: int64 arrays ``input_ids``, ``attention_mask``, ``token_type_ids`` of shape
[B, S] ([B, K, S] with K choices for multiple-choice). Row 0 is full length, later rows
are shorter and right-padded with ``pad_token_id`` / mask 0; every row has a second
segment (token_type 1) so both token-type embeddings are exercised.
"""

from __future__ import annotations

import numpy as np

from electra_bridge.schemas import ElectraConfig, get_head

PROBE_BATCH, PROBE_SEQ, PROBE_CHOICES = 3, 11, 3


def probe_batch(cfg: ElectraConfig, head: str = "base", *, batch: int = PROBE_BATCH, seq: int = PROBE_SEQ,
                choices: int = PROBE_CHOICES, seed: int = 0) -> dict[str, np.ndarray]:
    seq = min(seq, cfg.max_position_embeddings)
    rows = batch * choices if get_head(head).choices else batch
    rng = np.random.default_rng(seed)
    low = min(1, cfg.vocab_size - 1)                       # keep real tokens off the pad id where possible
    ids = rng.integers(low, cfg.vocab_size, size=(rows, seq), dtype=np.int64)
    mask = np.ones((rows, seq), dtype=np.int64)
    types = np.zeros((rows, seq), dtype=np.int64)
    for r in range(rows):
        length = max(2, seq - (r % batch) * max(1, seq // (batch + 1)) - r // batch)  # mixed lengths
        ids[r, length:] = cfg.pad_token_id
        mask[r, length:] = 0
        split = max(1, length // 2)
        types[r, split:length] = min(1, cfg.type_vocab_size - 1)  # second segment
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if get_head(head).choices:
        out = {k: v.reshape(batch, choices, seq) for k, v in out.items()}
    return out


#: the rows ``precision_batch`` appends after the probe rows, in order
PRECISION_ROWS = ("long", "repeated")
#: runner dtypes whose verification takes ``precision_batch`` instead of the probe batch alone
PRECISION_DTYPES = ("float16", "bfloat16", "int8")


def precision_batch(cfg: ElectraConfig, head: str = "base", *, seed: int = 0) -> dict[str, np.ndarray]:
    """The probe batch plus two rows that stress reduced precision, all ``max_position_embeddings`` long.

    Contract: the same int64 keys as ``probe_batch``, shape [PROBE_BATCH + 2, P] with P =
    max_position_embeddings ([PROBE_BATCH + 2, K, P] for multiple-choice). Rows 0..PROBE_BATCH-1
    are the probe rows unchanged over their first PROBE_SEQ columns and right-padded after
    (``pad_token_id``, mask 0, segment 0), so their outputs at real tokens are the probe batch's.
    Then, unpadded:

    * "long": P seeded tokens, a second segment from the middle: every position embedding is
      used and each softmax sums P terms (where float16's 11 bits drop small contributions);
    * "repeated": one token id at all P positions, segment 0: keys differ only by position, so
      attention scores are near-equal and the softmax saturates towards uniform -- the row where
      a rounding of the scores or of the mask arithmetic shows.

    For multiple-choice each choice gets its own tokens (the repeated row: its own repeated id).
    The standard probe batch itself is untouched (golden outputs depend on it).
    """
    spec = get_head(head)
    probe = probe_batch(cfg, head, seed=seed)
    full = cfg.max_position_embeddings
    choices = PROBE_CHOICES if spec.choices else 1
    rng = np.random.default_rng(seed + 1)
    low = min(1, cfg.vocab_size - 1)
    long_ids = rng.integers(low, cfg.vocab_size, size=(choices, full), dtype=np.int64)
    repeated_ids = np.repeat(rng.integers(low, cfg.vocab_size, size=(choices, 1), dtype=np.int64), full, axis=1)
    long_types = np.zeros((choices, full), dtype=np.int64)
    long_types[:, max(1, full // 2):] = min(1, cfg.type_vocab_size - 1)
    extra = {"input_ids": np.stack([long_ids, repeated_ids]),                       # [2, K, P]
             "attention_mask": np.ones((2, choices, full), dtype=np.int64),
             "token_type_ids": np.stack([long_types, np.zeros_like(long_types)])}
    pad_value = {"input_ids": cfg.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
    out = {}
    for key, rows in probe.items():
        rows = rows.reshape(PROBE_BATCH, choices, -1)
        padded = np.full((PROBE_BATCH, choices, full), pad_value[key], dtype=np.int64)
        padded[..., :rows.shape[-1]] = rows
        both = np.concatenate([padded, extra[key]])                                 # [B + 2, K, P]
        out[key] = both if spec.choices else both[:, 0, :]
    return out


def verification_batch(cfg: ElectraConfig, head: str, reduced: bool) -> dict[str, np.ndarray]:
    """What a comparison feeds both sides by default: ``precision_batch`` when a side is of reduced
    precision (``PRECISION_DTYPES``), else ``probe_batch``."""
    return (precision_batch if reduced else probe_batch)(cfg, head)
