"""The prefix planner on hand-made token batches: tree shape, gain rule, alignment, waves."""

import pytest

from sluice.engine.prefix import choose_groups, max_reusable_tokens, plan_batch, prefix_tree

B = 4  # block size in tokens: small, so hand-made prompts stay readable


def seq(start, n):
    return list(range(start, start + n))


def as_sets(groups):
    return sorted((g.prefix_tokens, sorted(g.members)) for g in groups)


def test_no_sharing_gives_singletons_and_nothing_reusable():
    batch = [seq(0, 10), seq(100, 10), seq(200, 10)]
    groups = choose_groups(prefix_tree(batch, B))
    assert as_sets(groups) == [(0, [0]), (0, [1]), (0, [2])]
    assert max_reusable_tokens(batch, B) == 0


def test_one_giant_group():
    shared = seq(1000, 16)
    batch = [shared + [i, i + 1] for i in range(0, 20, 2)]
    groups = choose_groups(prefix_tree(batch, B))
    assert as_sets(groups) == [(16, list(range(10)))]
    assert max_reusable_tokens(batch, B) == 9 * 16


def test_shared_prefix_is_aligned_down_to_whole_blocks():
    shared = seq(1000, 10)          # 10 shared tokens: only 2 whole blocks (8 tokens) reusable
    batch = [shared + [1, 2, 3], shared + [4, 5, 6]]
    tree = prefix_tree(batch, B)
    assert tree.depth == 8
    assert as_sets(choose_groups(tree)) == [(8, [0, 1])]
    assert max_reusable_tokens(batch, B) == 8


def test_last_prompt_token_is_never_counted_as_reusable():
    # Two identical 8-token prompts: vLLM recomputes the last token, so only one block is reusable.
    batch = [seq(0, 8), seq(0, 8)]
    assert max_reusable_tokens(batch, B) == 4
    assert prefix_tree(batch, B).depth == 4


def test_nested_prefixes_split_when_the_deeper_sharing_outweighs_the_split():
    system = seq(1000, 4)                      # 1 block shared by all
    doc_a, doc_b = seq(2000, 40), seq(3000, 40)  # 10 blocks shared within each doc group
    batch = [system + doc_a + [i] for i in range(3)] + [system + doc_b + [i] for i in range(3)]
    tree = prefix_tree(batch, B)
    assert tree.depth == 4 and len(tree.children) == 2
    assert [c.depth for c in tree.children] == [44, 44]
    # Keeping all six together saves 5 * 4 tokens; splitting saves 2 * (2 * 44) and costs 4.
    assert as_sets(choose_groups(tree)) == [(44, [0, 1, 2]), (44, [3, 4, 5])]


def test_nested_prefixes_stay_together_when_splitting_costs_more():
    system = seq(1000, 40)                     # 10 blocks shared by all
    batch = [system + seq(5000 + 10 * k, 4) + [i] for k in range(4) for i in range(2)]
    tree = prefix_tree(batch, B)
    assert tree.depth == 40 and [c.depth for c in tree.children] == [44] * 4
    # Together: 7 * 40 = 280 saved. Split: 4 * (1 * 44) = 176 saved, worse.
    assert as_sets(choose_groups(tree)) == [(40, list(range(8)))]


def test_plan_keeps_groups_contiguous_and_covers_every_request_once():
    prefixes = [seq(1000 * k, 32) for k in range(1, 5)]
    order = [(k, i) for i in range(5) for k in range(4)]       # interleaved, as a user might
    batch = [prefixes[k] + [i] for k, i in order]
    plan = plan_batch(batch, [4] * len(batch), B)
    assert sorted(plan.order) == list(range(len(batch)))
    positions = {i: p for p, i in enumerate(plan.order)}
    for g in plan.groups:
        spots = sorted(positions[i] for i in g.members)
        assert spots == list(range(spots[0], spots[0] + len(spots)))
        assert len({order[i][0] for i in g.members}) == 1


def test_decode_heavy_requests_go_first_within_a_wave():
    batch = [seq(1000, 32) + [i] for i in range(4)] + [seq(5000, 8), seq(6000, 8)]
    max_new = [2, 50, 2, 9, 1, 400]
    plan = plan_batch(batch, max_new, B)
    assert plan.order[0] == 5                               # the decode-heaviest request leads
    big = next(g for g in plan.groups if len(g.members) == 4)
    assert [max_new[i] for i in big.members] == [50, 9, 2, 2]


def test_waves_hold_whole_groups_that_fit_the_kv_cache():
    # Three groups, each 8 blocks of prefix + 4 members of 1 block prompt tail + 1 block output.
    batch = [seq(1000 * k, 32) + seq(50 * i, 3) for k in range(1, 4) for i in range(4)]
    max_new = [4] * len(batch)
    capacity = 2 * (8 + 4 * 2) * B                         # room for exactly two such groups
    plan = plan_batch(batch, max_new, B, kv_cache_tokens=capacity)
    assert [len(w) for w in plan.waves] == [8, 4]
    for wave in plan.waves:
        assert {i // 4 for i in wave} <= set(range(3))
        assert all(sum(1 for j in wave if j // 4 == i // 4) == 4 for i in wave)


def test_a_group_bigger_than_the_cache_is_cut_into_waves_that_fit():
    batch = [seq(1000, 32) + seq(50 * i, 3) for i in range(10)]
    capacity = (8 + 3 * 2) * B                              # the prefix plus three members
    plan = plan_batch(batch, [4] * 10, B, kv_cache_tokens=capacity)
    assert [len(w) for w in plan.waves] == [3, 3, 3, 1]
    assert sorted(plan.order) == list(range(10))


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        plan_batch([[1, 2]], [1, 2], B)
