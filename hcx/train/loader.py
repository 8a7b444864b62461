"""Packing documents into fixed-length training rows (SPEC §4).

Documents are read in a seeded shuffled order, each one turned into FIM form with
probability ``fim_rate`` (PSM or SPM), prefixed with ``<|endoftext|>`` (which doubles as the
beginning-of-document token, so the last token of a document learns to predict the end)
and concatenated into one stream that is cut into rows of ``seq_len + 1`` tokens. Each row
carries position ids that restart at 0 where a document starts and document ids for the
attention mask.

Every rank builds the same global batch and keeps its own rows, so the token stream does not
depend on the mesh: a run resumed on another data-parallel degree sees the same data. The
row length is an argument of :meth:`PackedLoader.next_batch`, so the long-context stage
repacks the same stream at the new length. ``state_dict`` is the exact data position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hcx.train.fim import FimTokens, Split, fim_permute, fim_split_points
from hcx.train.shards import TokenShards


@dataclass
class Batch:
    inputs: Tensor
    targets: Tensor
    positions: Tensor
    doc_ids: Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            *(
                t.to(device, non_blocking=True)
                for t in (self.inputs, self.targets, self.positions, self.doc_ids)
            )
        )


def document_positions(doc_ids: np.ndarray) -> np.ndarray:
    """Position of each token within its document, counted from the row start: (B, T) -> (B, T)."""
    B, T = doc_ids.shape
    starts = np.ones_like(doc_ids, dtype=bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    index = np.broadcast_to(np.arange(T), (B, T))
    last_start = np.maximum.accumulate(np.where(starts, index, 0), axis=1)
    return index - last_start


class PackedLoader:
    def __init__(
        self,
        shards: TokenShards,
        eot_id: int,
        fim: FimTokens | None = None,
        fim_rate: float = 0.0,
        spm_rate: float = 0.5,
        fim_split: Split = "thirds",
        seed: int = 0,
    ):
        if fim_rate > 0 and fim is None:
            raise ValueError("fim_rate > 0 needs the tokenizer's FIM sentinel tokens")
        self.shards, self.eot_id, self.fim = shards, eot_id, fim
        self.fim_rate, self.spm_rate, self.fim_split, self.seed = fim_rate, spm_rate, fim_split, seed
        self.epoch, self.cursor, self.next_doc_id = 0, 0, 0
        self.buffer = np.empty(0, dtype=np.int64)
        self.buffer_docs = np.empty(0, dtype=np.int64)
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.shards.num_documents)

    def document_sequence(self, index: int, epoch: int) -> np.ndarray:
        """``<|endoftext|>`` + the document, in FIM form for a seeded ``fim_rate`` share of documents."""
        doc = np.asarray(self.shards.document(index), dtype=np.int64)
        if self.fim_rate > 0 and len(doc) >= 3:
            rng = np.random.default_rng([self.seed, epoch, index])
            if rng.random() < self.fim_rate:
                spm = bool(rng.random() < self.spm_rate)
                doc = fim_permute(doc, spm, fim_split_points(len(doc), self.fim_split, rng), self.fim)
        return np.concatenate([[self.eot_id], doc])

    def _fill(self, n: int) -> None:
        pieces, docs, have = [self.buffer], [self.buffer_docs], len(self.buffer)
        while have < n:
            if self.cursor == len(self._order):
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)
            seq = self.document_sequence(int(self._order[self.cursor]), self.epoch)
            self.cursor += 1
            pieces.append(seq)
            docs.append(np.full(len(seq), self.next_doc_id, dtype=np.int64))
            self.next_doc_id += 1
            have += len(seq)
        self.buffer, self.buffer_docs = np.concatenate(pieces), np.concatenate(docs)

    def next_batch(self, batch_size: int, seq_len: int, rank: int = 0, world: int = 1) -> Batch:
        """The next global batch of ``batch_size`` rows; this rank's ``batch_size // world`` of them."""
        if batch_size % world:
            raise ValueError(f"global batch {batch_size} is not divisible by {world} data-parallel ranks")
        n = batch_size * (seq_len + 1)
        self._fill(n)
        tokens = self.buffer[:n].reshape(batch_size, seq_len + 1)
        docs = self.buffer_docs[:n].reshape(batch_size, seq_len + 1)
        self.buffer, self.buffer_docs = self.buffer[n:], self.buffer_docs[n:]
        local = batch_size // world
        rows = slice(rank * local, (rank + 1) * local)
        tokens, docs = tokens[rows], docs[rows, :-1]
        return Batch(
            inputs=torch.from_numpy(tokens[:, :-1].copy()),
            targets=torch.from_numpy(tokens[:, 1:].copy()),
            positions=torch.from_numpy(document_positions(docs)),
            doc_ids=torch.from_numpy(docs.copy()),
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "next_doc_id": self.next_doc_id,
            "buffer": self.buffer.copy(),
            "buffer_docs": self.buffer_docs.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.cursor, self.next_doc_id = (
            int(state["epoch"]),
            int(state["cursor"]),
            int(state["next_doc_id"]),
        )
        self.buffer = np.asarray(state["buffer"], dtype=np.int64)
        self.buffer_docs = np.asarray(state["buffer_docs"], dtype=np.int64)
        self._order = self._epoch_order(self.epoch)
