"""Global prefix grouping (the BatchLLM idea): plan a batch so each shared prefix is prefilled once.

vLLM's prefix cache reuses whole KV blocks of a prompt's prefix while they are still cached.
Submitted in a random order, requests sharing a prefix are scattered and, once the batch's
working set is bigger than the KV cache, the prefix is evicted before its next user arrives.
The planner fixes the order before submission:

1. Build a token-level prefix tree over the whole batch. Only whole KV blocks are reusable, and
   never a prompt's last token (vLLM computes at least one), so every depth is aligned down to
   the block size and capped at the reusable part of the prompt.
2. Choose groups by the gain rule. Sharing a node's prefix of L tokens among its n members saves
   (n - 1) * L prefill tokens. Splitting the node into its children's groups saves what the
   children save with their deeper prefixes, but prefills L once per child group. A node is
   split only when that saves more; at depth 0 there is nothing to share, so it always splits.
3. Pack groups, in tree order, into waves whose KV demand fits the cache (a group's prefix
   counts once); a group bigger than the cache is cut into chunks that fit.
4. Within a wave, decode-heavy groups and requests go first, so their long decodes overlap the
   prefills of the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass
class Node:
    """A node of the block-aligned prefix tree: `members` share their first `depth` tokens."""
    depth: int
    members: list[int]
    children: list["Node"] = field(default_factory=list)


@dataclass
class Group:
    """Requests submitted together so their shared `prefix_tokens` are prefilled once."""
    prefix_tokens: int
    members: list[int]


@dataclass
class Plan:
    groups: list[Group]          # in submission order
    waves: list[list[int]]       # request indices, one list per wave, in submission order
    max_reusable_tokens: int     # prompt tokens a perfect prefix cache could serve

    @property
    def order(self) -> list[int]:
        return [i for wave in self.waves for i in wave]


def _lcp(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


def _reusable(length: int, block_size: int) -> int:
    """Tokens of a prompt of `length` that could come from the cache: whole blocks, last token excluded."""
    return max(length - 1, 0) // block_size * block_size


def _sorted_shares(token_ids: Sequence[Sequence[int]], block_size: int):
    """Requests in lexicographic token order, and for each one the block-aligned tokens it
    shares with the one before it (what it could reuse if that one ran first)."""
    arrays = [np.asarray(t, dtype=np.int64) for t in token_ids]
    order = sorted(range(len(arrays)), key=lambda i: arrays[i].tolist())
    shares = np.zeros(len(order), dtype=np.int64)
    for j in range(1, len(order)):
        prev, cur = arrays[order[j - 1]], arrays[order[j]]
        common = min(_lcp(prev, cur), _reusable(len(cur), block_size))
        shares[j] = common // block_size * block_size
    return order, shares


def prefix_tree(token_ids: Sequence[Sequence[int]], block_size: int) -> Node:
    """The block-aligned prefix tree of a batch; leaves are single requests (depth 0)."""
    return _tree(*_sorted_shares(token_ids, block_size))


def _tree(order: list[int], shares: np.ndarray) -> Node:
    if not order:
        return Node(0, [])

    # Members of every node are a contiguous run of the sorted order; a node's depth is the
    # smallest share inside its run, and its children are the runs cut where the share equals it.
    # Depth grows by at least one block per level, so recursion stays shallow.
    def build(lo: int, hi: int, depth: int) -> Node:
        node = Node(depth, order[lo:hi])
        if hi - lo == 1:
            return node
        cuts = [lo] + [j for j in range(lo + 1, hi) if shares[j] == depth] + [hi]
        for a, b in zip(cuts, cuts[1:]):
            child_depth = int(shares[a + 1:b].min()) if b - a > 1 else 0
            node.children.append(build(a, b, child_depth))
        return node

    root_depth = int(shares[1:].min()) if len(order) > 1 else 0
    return build(0, len(order), root_depth)


def choose_groups(node: Node) -> list[Group]:
    """Groups by the gain rule, in tree order."""
    if not node.members:
        return []
    if not node.children:
        return [Group(node.depth if len(node.members) > 1 else 0, list(node.members))]
    child_groups = [g for child in node.children for g in choose_groups(child)]
    saved_here = (len(node.members) - 1) * node.depth
    saved_split = sum((len(g.members) - 1) * g.prefix_tokens for g in child_groups)
    if node.depth == 0 or saved_split > saved_here:
        return child_groups
    return [Group(node.depth, list(node.members))]


def _blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


def _pack_waves(groups: list[Group], lengths, max_new_tokens, block_size: int,
                kv_cache_tokens: int | None) -> list[list[Group]]:
    if kv_cache_tokens is None:
        return [groups]
    capacity = kv_cache_tokens // block_size
    waves: list[list[Group]] = [[]]
    used = 0
    for group in groups:
        shared = group.prefix_tokens // block_size
        chunk: list[int] = []
        chunk_used = shared
        for i in group.members:
            own = _blocks(lengths[i] + max_new_tokens[i], block_size) - shared
            if chunk and chunk_used + own > capacity:
                # The group alone overflows the cache: close this chunk as a wave of its own.
                if waves[-1]:
                    waves.append([])
                waves[-1].append(Group(group.prefix_tokens, chunk))
                waves.append([])
                used, chunk, chunk_used = 0, [], shared
            chunk.append(i)
            chunk_used += own
        if used + chunk_used > capacity and waves[-1]:
            waves.append([])
            used = 0
        waves[-1].append(Group(group.prefix_tokens, chunk))
        used += chunk_used
    return [w for w in waves if w]


def plan_batch(token_ids: Sequence[Sequence[int]], max_new_tokens: Sequence[int],
               block_size: int, kv_cache_tokens: int | None = None) -> Plan:
    """Order a batch of tokenized prompts for the prefix cache; see the module docstring."""
    if len(token_ids) != len(max_new_tokens):
        raise ValueError("plan_batch: token_ids and max_new_tokens differ in length")
    lengths = [len(t) for t in token_ids]
    order, shares = _sorted_shares(token_ids, block_size)
    groups = choose_groups(_tree(order, shares))
    for g in groups:
        g.members.sort(key=lambda i: -max_new_tokens[i])   # stable: tree order among equals

    def decode_ratio(g: Group) -> float:
        decode = sum(max_new_tokens[i] for i in g.members)
        prefill = g.prefix_tokens + sum(lengths[i] - g.prefix_tokens for i in g.members)
        return decode / max(prefill, 1)

    waves = [sorted(w, key=decode_ratio, reverse=True)
             for w in _pack_waves(groups, lengths, max_new_tokens, block_size, kv_cache_tokens)]
    return Plan(groups=[g for w in waves for g in w],
                waves=[[i for g in w for i in g.members] for w in waves],
                max_reusable_tokens=int(shares.sum()))


def max_reusable_tokens(token_ids: Sequence[Sequence[int]], block_size: int) -> int:
    """Prompt tokens a perfect prefix cache could serve for this batch, in the best order."""
    return int(_sorted_shares(token_ids, block_size)[1].sum())
