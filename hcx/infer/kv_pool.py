"""A fixed pool of key/value cache blocks (paged attention's memory layout, SPEC §5.3).

All keys and values live in two tensors allocated once, ``(layers, blocks·block_size,
kv_heads, head_dim)``; a sequence owns a list of block ids (its block table) and token
``t`` of it sits in slot ``table[t // block_size]·block_size + t % block_size``. Memory is
bounded by construction: the scheduler admits or preempts sequences by asking
:meth:`BlockPool.allocate`, which fails instead of growing.

Blocks are reference-counted: the samples of one prompt (``n > 1``) share the blocks that
hold the prompt's keys and values (:meth:`BlockPool.share`), and a block returns to the free
list when its last holder releases it. Shared blocks are never written: a sequence only
writes positions past those it shares.
"""

from __future__ import annotations

import torch

from hcx.model.config import ModelConfig


class OutOfBlocks(RuntimeError):
    """The pool has fewer free blocks than asked for; the scheduler must wait or preempt."""


class BlockPool:
    def __init__(
        self, model_cfg: ModelConfig, num_blocks: int, block_size: int, device=None, dtype=torch.float32
    ):
        self.num_blocks = num_blocks
        self.block_size = block_size
        shape = (model_cfg.n_layers, num_blocks * block_size, model_cfg.n_kv_heads, model_cfg.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self._free = list(range(num_blocks - 1, -1, -1))
        self._holders = [0] * num_blocks
        self.peak_used = 0

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def allocate(self, count: int) -> list[int]:
        if count > len(self._free):
            raise OutOfBlocks(f"asked for {count} blocks, {len(self._free)} free of {self.num_blocks}")
        blocks = [self._free.pop() for _ in range(count)]
        for block in blocks:
            self._holders[block] = 1
        self.peak_used = max(self.peak_used, self.num_used)
        return blocks

    def share(self, blocks: list[int]) -> list[int]:
        """Another holder for ``blocks`` (already filled, never written again); returns a new list."""
        for block in blocks:
            self._holders[block] += 1
        return list(blocks)

    def copy_tokens(self, source: int, target: int, num_tokens: int) -> None:
        """Copy the first ``num_tokens`` keys and values of block ``source`` into block ``target``."""
        src, dst = source * self.block_size, target * self.block_size
        self.keys[:, dst : dst + num_tokens] = self.keys[:, src : src + num_tokens]
        self.values[:, dst : dst + num_tokens] = self.values[:, src : src + num_tokens]

    def release(self, blocks: list[int]) -> None:
        """Drop one hold on each block; a block nobody holds is free again."""
        for block in reversed(blocks):
            self._holders[block] -= 1
            if self._holders[block] == 0:
                self._free.append(block)
        blocks.clear()

    @property
    def bytes(self) -> int:
        return 2 * self.keys.numel() * self.keys.element_size()
