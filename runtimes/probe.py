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
