"""What vLLM's prefix cache probably holds, as the admission queue sees it.

vLLM caches KV per full block, keyed by the hash of the block's tokens chained with the hash of
the blocks before it, and evicts least recently used blocks. `PrefixIndex` mirrors that on the
prompts sluice has admitted (it cannot see inside the engine core): a prompt's predicted cached
prefix is its leading run of block hashes the index holds. The last prompt token is never
counted, as vLLM always computes it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence


def block_hashes(token_ids: Sequence[int], block_size: int) -> tuple[int, ...]:
    """Chained hashes of the full blocks of `token_ids` before its last token."""
    hashes, h = [], 0
    usable = max(len(token_ids) - 1, 0) // block_size * block_size
    for start in range(0, usable, block_size):
        h = hash((h, tuple(token_ids[start:start + block_size])))
        hashes.append(h)
    return tuple(hashes)


class PrefixIndex:
    """LRU set of block hashes, at most `capacity_blocks` of them (the KV cache's size)."""

    def __init__(self, block_size: int, capacity_blocks: int):
        self.block_size = block_size
        self.capacity_blocks = capacity_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def cached_tokens(self, hashes: Sequence[int]) -> int:
        n = 0
        for h in hashes:
            if h not in self._blocks:
                break
            n += 1
        return n * self.block_size

    def add(self, hashes: Sequence[int]) -> None:
        """A prompt was admitted: its blocks are (about to be) cached and most recently used."""
        for h in hashes:
            self._blocks[h] = None
            self._blocks.move_to_end(h)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)

    def clear(self) -> None:
        self._blocks.clear()
