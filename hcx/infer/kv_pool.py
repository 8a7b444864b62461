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

Automatic prefix caching (vLLM's idea): a full block can be published under the identity of
its content — its tokens and everything before them (:func:`extend_keys`). A block nobody
holds any more keeps its keys and values and stays findable, as *cached*, until the pool
needs it for something else (least recently released first). A new sequence whose first
blocks match published ones (:meth:`BlockPool.lookup`) holds them instead of computing them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch

from hcx.model.config import ModelConfig


class OutOfBlocks(RuntimeError):
    """The pool has fewer free blocks than asked for; the scheduler must wait or preempt."""


BlockKey = tuple[int, tuple[int, ...]]
"""A full block's identity: the hash of the previous block's key (0 for the first) and its tokens.

Chaining through a 64-bit hash keeps keys short (a long prompt's last key does not hold the
whole prompt); two different prefixes would have to collide in that hash to be confused."""


def extend_keys(
    keys: list[BlockKey], tokens: Sequence[int], block_size: int, num_blocks: int
) -> list[BlockKey]:
    """``keys`` (of the first blocks of ``tokens``) grown to ``num_blocks`` keys, in place."""
    while len(keys) < num_blocks:
        i = len(keys)
        keys.append((hash(keys[-1]) if keys else 0, tuple(tokens[i * block_size : (i + 1) * block_size])))
    return keys


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
        self._cached: OrderedDict[int, None] = OrderedDict()  # published, held by nobody: oldest first
        self._published: dict[BlockKey, int] = {}
        self._key_of: dict[int, BlockKey] = {}
        self.peak_used = 0
        self.num_evicted = 0

    @property
    def num_free(self) -> int:
        """Blocks available to :meth:`allocate`: never used, released, or cached and evictable."""
        return len(self._free) + len(self._cached)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    @property
    def num_cached(self) -> int:
        return len(self._cached)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def allocate(self, count: int) -> list[int]:
        """``count`` blocks to write; cached blocks are taken (and forgotten) once no free one is left."""
        if count > self.num_free:
            raise OutOfBlocks(f"asked for {count} blocks, {self.num_free} free of {self.num_blocks}")
        blocks = []
        for _ in range(count):
            if self._free:
                block = self._free.pop()
            else:
                block, _ = self._cached.popitem(last=False)
                del self._published[self._key_of.pop(block)]
                self.num_evicted += 1
            self._holders[block] = 1
            blocks.append(block)
        self.peak_used = max(self.peak_used, self.num_used)
        return blocks

    def share(self, blocks: list[int]) -> list[int]:
        """Another holder for ``blocks`` (already filled, never written again); returns a new list."""
        for block in blocks:
            if self._holders[block] == 0:
                del self._cached[block]
            self._holders[block] += 1
        return list(blocks)

    def publish(self, block: int, key: BlockKey) -> None:
        """Make a full block findable by its content; a second block with the same content is not."""
        if key not in self._published and block not in self._key_of:
            self._published[key] = block
            self._key_of[block] = key

    def lookup(self, keys: Sequence[BlockKey]) -> list[int]:
        """Hold the published blocks of the longest run of ``keys`` from the first one on."""
        found = []
        for key in keys:
            block = self._published.get(key)
            if block is None:
                break
            found.append(block)
        return self.share(found)

    def forget(self) -> None:
        """Unpublish every block (the model's weights changed: cached keys and values are stale)."""
        self._free.extend(self._cached)
        self._cached.clear()
        self._published.clear()
        self._key_of.clear()

    def copy_tokens(self, source: int, target: int, num_tokens: int) -> None:
        """Copy the first ``num_tokens`` keys and values of block ``source`` into block ``target``."""
        src, dst = source * self.block_size, target * self.block_size
        self.keys[:, dst : dst + num_tokens] = self.keys[:, src : src + num_tokens]
        self.values[:, dst : dst + num_tokens] = self.values[:, src : src + num_tokens]

    def release(self, blocks: list[int]) -> None:
        """Drop one hold on each block; a block nobody holds is free again (cached, if published)."""
        for block in reversed(blocks):
            self._holders[block] -= 1
            if self._holders[block] == 0:
                if block in self._key_of:
                    self._cached[block] = None
                else:
                    self._free.append(block)
        blocks.clear()

    @property
    def bytes(self) -> int:
        return 2 * self.keys.numel() * self.keys.element_size()
