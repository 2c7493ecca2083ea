"""Rewrite rules for DuckDB on sqlglot trees: each returns a changed copy, or None if it does not apply.

Redundancy removal: DISTINCT under a grouping or a unique key, joins whose columns are unused
and cannot change cardinality, ORDER BY inside subqueries, repeated subqueries into one CTE.
Selectivity-based: predicate transfer across equi-joins, pre-aggregation below a join, OR of
selective predicates to UNION ALL, filters implied by an OR for each table it reads. Each rule only fires where it keeps the result by
construction; the pipeline still verifies every candidate, so a rule may be conservative
about when it fires but never has to be trusted.
"""

from __future__ import annotations

from typing import Callable

from sqlglot import exp

from ..schema import DatabaseProfile

Rule = Callable[[exp.Expression, DatabaseProfile], "exp.Expression | None"]
NESTED = (exp.Select, exp.SetOperation, exp.Subquery)


def conjuncts(cond: exp.Expression | None) -> list[exp.Expression]:
    if cond is None:
        return []
    if isinstance(cond, exp.Where):
        cond = cond.this
    cond = cond.unnest()
    if isinstance(cond, exp.And):
        return conjuncts(cond.left) + conjuncts(cond.right)
    return [cond]


def _and(parts: list[exp.Expression]) -> exp.Expression | None:
    return exp.and_(*parts, copy=False) if parts else None


def set_where(select: exp.Select, parts: list[exp.Expression]) -> None:
    select.set("where", exp.Where(this=_and(parts)) if parts else None)


def sources(select: exp.Select) -> dict[str, str | None] | None:
    """{alias: base table name} of FROM and joins (None for derived tables);
    None when the FROM clause has a shape the rules do not handle."""
    from_ = select.args.get("from_")
    if from_ is None:
        return None
    out: dict[str, str | None] = {}
    for item in [from_.this] + [j.this for j in select.args.get("joins") or []]:
        if isinstance(item, exp.Table) and not item.args.get("joins") and item.name:
            if isinstance(item.this, exp.Identifier) and not item.args.get("db"):
                out[item.alias_or_name.lower()] = item.name.lower()
                continue
        if isinstance(item, exp.Subquery) and item.alias:
            out[item.alias.lower()] = None
            continue
        return None
    return out


def owner(col: exp.Column, srcs: dict[str, str | None], profile: DatabaseProfile) -> str | None:
    """Alias of the FROM item that a column belongs to, when that is certain."""
    if col.table:
        return col.table.lower() if col.table.lower() in srcs else None
    if any(t is None or profile.table(t) is None for t in srcs.values()):
        return None
    hits = [a for a, t in srcs.items() if profile.table(t).column(col.name)]
    return hits[0] if len(hits) == 1 else None


def inner_joins_only(select: exp.Select) -> bool:
    return all(not j.side and j.kind in ("", "INNER", "CROSS") and not j.args.get("using")
               for j in select.args.get("joins") or [])


def has_nested_query(node: exp.Expression) -> bool:
    return any(n is not node and isinstance(n, NESTED) for n in node.walk())


# --- redundancy removal -----------------------------------------------------------------

def distinct_redundant(tree, profile):
    """SELECT DISTINCT whose rows are already unique: all GROUP BY keys are selected, or a
    unique key of the only table is selected."""
    tree = tree.copy()
    changed = False
    for select in tree.find_all(exp.Select):
        distinct = select.args.get("distinct")
        if not distinct or distinct.args.get("on"):
            continue
        projected = [p.unalias() for p in select.expressions]
        group = select.args.get("group")
        unique = False
        if group and not any(group.args.get(k) for k in ("rollup", "cube", "grouping_sets")):
            unique = bool(group.expressions) and all(g in projected for g in group.expressions)
        elif not group and not select.args.get("joins") and not select.find(exp.AggFunc):
            srcs = sources(select)
            if srcs and len(srcs) == 1 and None not in srcs.values():
                table = profile.table(next(iter(srcs.values())))
                names = {p.name.lower() for p in projected if isinstance(p, exp.Column)}
                unique = table is not None and any(k and k <= names for k in table.unique_keys())
        if unique:
            select.set("distinct", None)
            changed = True
    return tree if changed else None


def _ancestors(node):
    while node.parent is not None:
        node = node.parent
        yield node


def col_in(node, container) -> bool:
    return node is container or any(a is container for a in _ancestors(node))


def _alias_used(tree: exp.Expression, alias: str, table, join: exp.Join) -> bool:
    for col in tree.find_all(exp.Column):
        if col_in(col, join):
            continue
        if col.table.lower() == alias or (not col.table and table.column(col.name)):
            return True
    # SELECT * or t.* anywhere may read the table's columns
    return any(isinstance(p, exp.Star) or (isinstance(p, exp.Column) and p.is_star)
               for q in tree.find_all(exp.Select) for p in q.expressions)


def unused_join(tree, profile):
    """LEFT JOIN t ON t.<unique key> = <outer columns>, where nothing else reads t: every outer
    row still matches at most one t row, so the join changes nothing and is dropped."""
    tree = tree.copy()
    for select in tree.find_all(exp.Select):
        srcs = sources(select)
        if not srcs:
            continue
        for i, join in enumerate(select.args.get("joins") or []):
            if join.side != "LEFT" or not isinstance(join.this, exp.Table):
                continue
            alias = join.this.alias_or_name.lower()
            table = profile.table(srcs.get(alias) or "")
            if table is None:
                continue
            keyed = set()
            for c in conjuncts(join.args.get("on")):
                if not isinstance(c, exp.EQ):
                    keyed = None
                    break
                sides = [c.left, c.right]
                mine = [s for s in sides if isinstance(s, exp.Column) and s.table.lower() == alias]
                other = [s for s in sides if s not in mine]
                if len(mine) != 1 or any(alias == col.table.lower() or not col.table
                                         for o in other for col in o.find_all(exp.Column)):
                    keyed = None
                    break
                keyed.add(mine[0].name.lower())
            if not keyed or not any(k <= keyed for k in table.unique_keys()):
                continue
            if _alias_used(tree, alias, table, join):
                continue
            joins = select.args["joins"]
            joins.pop(i)
            select.set("joins", joins or None)
            return tree
    return None


def order_in_subquery(tree, profile):
    """ORDER BY without LIMIT/OFFSET in a CTE, derived table or IN/EXISTS subquery: SQL does not
    promise that order to the outer query, so sorting there is wasted work."""
    tree = tree.copy()
    changed = False
    for q in list(tree.find_all(exp.Select, exp.SetOperation)):
        if q is tree or not q.args.get("order") or q.args.get("limit") or q.args.get("offset"):
            continue
        parent = q.parent
        if isinstance(parent, exp.Subquery):
            parent = parent.parent
        if isinstance(parent, (exp.CTE, exp.From, exp.Join, exp.In, exp.Exists)):
            q.set("order", None)
            changed = True
    return tree if changed else None


def uncorrelated(q: exp.Expression, profile: DatabaseProfile) -> bool:
    """Every column in `q` resolves to a FROM item inside `q` (so it can be computed once)."""
    aliases, tables = set(), []
    for t in q.find_all(exp.Table):
        aliases.add(t.alias_or_name.lower())
        if profile.table(t.name):
            tables.append(profile.table(t.name))
    for sub in q.find_all(exp.Subquery):
        if sub.alias:
            aliases.add(sub.alias.lower())
    if any(profile.table(t.name) is None for t in q.find_all(exp.Table)):
        return False  # a CTE or unknown table: its columns cannot be resolved here
    for col in q.find_all(exp.Column):
        if col.table:
            if col.table.lower() not in aliases:
                return False
        elif not any(t.column(col.name) for t in tables):
            return False
    return True


def repeated_subquery_to_cte(tree, profile):
    """The same uncorrelated subquery written two or more times becomes one materialized CTE."""
    tree = tree.copy()
    groups: dict[str, list[exp.Expression]] = {}
    for sub in tree.find_all(exp.Subquery):
        if isinstance(sub.this, (exp.Select, exp.SetOperation)) and uncorrelated(sub.this, profile):
            groups.setdefault(sub.this.sql(), []).append(sub.this)
    repeated = [g for g in groups.values() if len(g) >= 2]
    if not repeated:
        return None
    taken = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    ctes = []
    for n, group in enumerate(repeated):
        name = f"_repeated{n}"
        while name in taken:
            name += "_"
        ctes.append(exp.CTE(this=group[0].copy(), alias=exp.TableAlias(this=exp.to_identifier(name)),
                            materialized=True))
        for q in group:
            sub = q.parent
            if isinstance(sub, exp.Subquery) and sub.alias and isinstance(sub.parent, (exp.From, exp.Join)):
                sub.replace(exp.Table(this=exp.to_identifier(name),
                                      alias=exp.TableAlias(this=exp.to_identifier(sub.alias))))
            else:
                q.replace(exp.select("*").from_(name))
    with_ = tree.args.get("with_")
    if with_ is not None:
        with_.set("expressions", ctes + list(with_.expressions))
    else:
        tree.set("with_", exp.With(expressions=ctes))
    return tree


# --- selectivity-based ----------------------------------------------------------------------

CONST_PREDICATES = (exp.EQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.In, exp.Like)


def _constant(node: exp.Expression) -> bool:
    return not any(isinstance(n, (exp.Column, *NESTED)) for n in node.walk())


def _column_predicate(p: exp.Expression) -> exp.Column | None:
    """The column of `col <op> constant(s)`, else None."""
    if not isinstance(p, CONST_PREDICATES) or not isinstance(p.this, exp.Column):
        return None
    rest = [v for k, v in p.args.items() if k != "this" and v is not None]
    flat = [x for v in rest for x in (v if isinstance(v, list) else [v])]
    if isinstance(p, exp.In) and p.args.get("query"):
        return None
    return p.this if flat and all(_constant(x) for x in flat) else None


def predicate_transfer(tree, profile):
    """`a.x = b.y AND a.x <op> c` implies `b.y <op> c`: add the implied filter, so both sides of
    an inner equi-join are filtered before the join (same column types only)."""
    tree = tree.copy()
    changed = False
    for select in tree.find_all(exp.Select):
        srcs = sources(select)
        if not srcs or not inner_joins_only(select) or None in srcs.values():
            continue
        preds = conjuncts(select.args.get("where"))
        for j in select.args.get("joins") or []:
            preds += conjuncts(j.args.get("on"))

        def key(col):
            a = owner(col, srcs, profile)
            return (a, col.name.lower()) if a else None

        def ctype(k):
            c = profile.table(srcs[k[0]]).column(k[1]) if profile.table(srcs[k[0]]) else None
            return c.type if c else None

        parent: dict = {}

        def find(k):
            while parent[k] != k:
                k = parent[k]
            return k
        for p in preds:
            if isinstance(p, exp.EQ) and all(isinstance(x, exp.Column) for x in (p.left, p.right)):
                a, b = key(p.left), key(p.right)
                if a and b and a[0] != b[0] and ctype(a) and ctype(a) == ctype(b):
                    parent.setdefault(a, a)
                    parent.setdefault(b, b)
                    parent[find(a)] = find(b)
        existing = {p.sql() for p in preds}
        added = []
        for p in preds:
            col = _column_predicate(p)
            k = key(col) if col is not None else None
            if k not in parent:
                continue
            for other in sorted(o for o in parent if o != k and find(o) == find(k)):
                new = p.copy()
                new.set("this", exp.column(other[1], table=other[0]))
                if new.sql() not in existing:
                    existing.add(new.sql())
                    added.append(new)
        if added:
            set_where(select, conjuncts(select.args.get("where")) + added)
            changed = True
    return tree if changed else None


DECOMPOSABLE = (exp.Sum, exp.Count, exp.Min, exp.Max, exp.Avg)


def preaggregate(tree, profile):
    """Aggregates that read one table F are computed per join key of F below the join:
    F is replaced by (SELECT keys, partial aggregates FROM F WHERE <F-only filters> GROUP BY keys).
    Fires when the stats say the keys cut F's rows at least in half."""
    tree = tree.copy()
    for select in tree.find_all(exp.Select):
        out = _preaggregate_select(select, profile)
        if out is not None:
            if select is tree:
                return out
            select.replace(out)
            return tree
    return None


def _preaggregate_select(select: exp.Select, profile) -> exp.Select | None:
    srcs = sources(select)
    if (not srcs or len(srcs) < 2 or None in srcs.values() or not inner_joins_only(select)
            or select.args.get("distinct") or has_nested_query(select)
            or select.find(exp.Window) or select.find(exp.Filter)):
        return None
    group = select.args.get("group")
    if group and any(group.args.get(k) for k in ("rollup", "cube", "grouping_sets")):
        return None
    aggs = list(select.find_all(exp.AggFunc))
    if not aggs or any(not isinstance(a, DECOMPOSABLE) or a.find(exp.Distinct) for a in aggs):
        return None
    fact = None
    for a in aggs:
        owners = {owner(c, srcs, profile) for c in a.find_all(exp.Column)}
        if None in owners or len(owners) > 1:
            return None
        if owners:
            (o,) = owners
            if fact not in (None, o):
                return None
            fact = o
    if fact is None:
        return None
    ftable = profile.table(srcs[fact])
    # F-only WHERE conjuncts move below; F columns read anywhere else become grouping keys
    local, kept = [], []
    for c in conjuncts(select.args.get("where")):
        owners = {owner(col, srcs, profile) for col in c.find_all(exp.Column)}
        (local if owners == {fact} else kept).append(c)
    keys: dict[str, exp.Column] = {}
    agg_ids = {id(n) for a in aggs for n in a.walk()}
    output_aliases = {p.alias.lower() for p in select.expressions if p.alias}
    for col in select.find_all(exp.Column):
        if id(col) in agg_ids or any(col_in(col, c) for c in local):
            continue
        o = owner(col, srcs, profile)
        if o is None and not col.table and col.name.lower() in output_aliases:
            continue  # ORDER BY / HAVING naming an output column
        if o is None:
            return None
        if o == fact:
            keys[col.name.lower()] = col
    if not keys:
        return None
    est = 1
    for k in keys:
        stats = ftable.column(k)
        est *= max(1, stats.distinct if stats else ftable.rows)
    if est * 2 > ftable.rows:
        return None
    inner_cols = [exp.column(k) for k in keys]
    partials: list[exp.Expression] = []
    out = select.copy()

    def partial(e: exp.Expression) -> exp.Column:
        partials.append(exp.alias_(e, f"_pa{len(partials)}"))
        return exp.column(f"_pa{len(partials) - 1}", table=fact)

    for a in list(out.find_all(exp.AggFunc)):
        arg = a.this.copy() if a.this is not None else None
        for c in (arg.find_all(exp.Column) if arg is not None else []):
            c.set("table", None)
        if isinstance(a, exp.Count):
            cnt = partial(exp.Count(this=arg if arg is not None and not isinstance(arg, exp.Star)
                                    else exp.Star()))
            new = exp.func("coalesce", exp.cast(exp.Sum(this=cnt), "BIGINT"), exp.Literal.number(0))
        elif isinstance(a, exp.Avg):
            s, n = partial(exp.Sum(this=arg)), partial(exp.Count(this=arg.copy()))
            new = exp.Div(this=exp.cast(exp.Sum(this=s), "DOUBLE"), expression=exp.Sum(this=n))
        else:
            new = type(a)(this=partial(type(a)(this=arg)))
        a.replace(new)
    table = exp.Table(this=exp.to_identifier(ftable.name))
    inner = exp.select(*inner_cols, *partials).from_(table)
    local_sql = [c.copy() for c in local]
    for c in local_sql:
        for col in c.find_all(exp.Column):
            col.set("table", None)
    if local_sql:
        inner = inner.where(_and(local_sql))
    inner = inner.group_by(*[exp.column(k) for k in keys])
    set_where(out, [c.copy() for c in kept])
    for col in out.find_all(exp.Column):
        if not col.table and col.name.lower() in keys:
            col.set("table", exp.to_identifier(fact))
    sub = exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(fact)))
    for item in [out.args["from_"].this] + [j.this for j in out.args.get("joins") or []]:
        if isinstance(item, exp.Table) and item.alias_or_name.lower() == fact:
            item.replace(sub)
    return out


def or_to_union(tree, profile):
    """WHERE ... AND (p1 OR p2 ...) where every p_i reads one table t: t becomes
    (SELECT * FROM t WHERE p1 UNION ALL SELECT * FROM t WHERE p2 AND p1 IS NOT TRUE ...),
    so each branch can use its own selective filter; the IS NOT TRUE guards keep bag semantics."""
    tree = tree.copy()
    for select in tree.find_all(exp.Select):
        srcs = sources(select)
        if not srcs or None in srcs.values() or not inner_joins_only(select):
            continue
        for cond in conjuncts(select.args.get("where")):
            if not isinstance(cond, exp.Or) or has_nested_query(cond):
                continue
            parts = _disjuncts(cond)
            owners = {owner(c, srcs, profile) for c in cond.find_all(exp.Column)}
            if len(owners) != 1 or None in owners or not 2 <= len(parts) <= 4:
                continue
            (alias,) = owners
            _split_or(select, cond, alias, srcs[alias], parts)
            return tree
    return None


def _disjuncts(cond: exp.Expression) -> list[exp.Expression]:
    cond = cond.unnest()
    if isinstance(cond, exp.Or):
        return _disjuncts(cond.left) + _disjuncts(cond.right)
    return [cond]


def _split_or(select: exp.Select, cond: exp.Expression, alias: str, table: str, parts) -> None:
    branches = []
    for i, p in enumerate(parts):
        guards = [exp.Not(this=exp.Paren(this=exp.Is(this=exp.Paren(this=q.copy()),
                                                      expression=exp.Boolean(this=True))))
                  for q in parts[:i]]
        src = exp.Table(this=exp.to_identifier(table), alias=exp.TableAlias(this=exp.to_identifier(alias)))
        branches.append(exp.select("*").from_(src).where(_and([p.copy(), *guards])))
    union = branches[0]
    for b in branches[1:]:
        union = exp.union(union, b, distinct=False)
    sub = exp.Subquery(this=union, alias=exp.TableAlias(this=exp.to_identifier(alias)))
    for item in [select.args["from_"].this] + [j.this for j in select.args.get("joins") or []]:
        if isinstance(item, exp.Table) and item.alias_or_name.lower() == alias:
            item.replace(sub)
    set_where(select, [c for c in conjuncts(select.args.get("where")) if c is not cond])


def or_implied_filters(tree, profile):
    """WHERE (A1 AND B1 ...) OR (A2 AND B2 ...) where every branch filters table t: add the
    implied filter (t-part of branch 1) OR (t-part of branch 2) ..., which can be applied to t
    before the join. It only removes rows the OR would remove, so the result is unchanged."""
    tree = tree.copy()
    changed = False
    for select in tree.find_all(exp.Select):
        srcs = sources(select)
        if not srcs or None in srcs.values() or not inner_joins_only(select):
            continue
        existing = conjuncts(select.args.get("where"))
        added = []
        for cond in existing:
            if not isinstance(cond, exp.Or) or has_nested_query(cond):
                continue
            branches = [conjuncts(d) for d in _disjuncts(cond)]
            per_branch = []
            for parts in branches:
                by_alias: dict[str, list[exp.Expression]] = {}
                for p in parts:
                    owners = {owner(c, srcs, profile) for c in p.find_all(exp.Column)}
                    if len(owners) == 1 and None not in owners:
                        by_alias.setdefault(owners.pop(), []).append(p)
                per_branch.append(by_alias)
            if len(per_branch) < 2:
                continue
            common = set.intersection(*(set(b) for b in per_branch))
            for alias in sorted(common):
                if all(len(b[alias]) == len(parts) for b, parts in zip(per_branch, branches)):
                    continue  # the OR already reads this table alone
                implied = exp.or_(*(exp.paren(_and([p.copy() for p in b[alias]]), copy=False)
                                    for b in per_branch), copy=False)
                if implied.sql() not in {e.sql() for e in existing + added}:
                    added.append(exp.paren(implied, copy=False))
        if added:
            set_where(select, existing + added)
            changed = True
    return tree if changed else None


RULES: dict[str, Rule] = {
    "distinct_redundant": distinct_redundant,
    "unused_join": unused_join,
    "order_in_subquery": order_in_subquery,
    "repeated_subquery_to_cte": repeated_subquery_to_cte,
    "predicate_transfer": predicate_transfer,
    "preaggregate": preaggregate,
    "or_to_union": or_to_union,
    "or_implied_filters": or_implied_filters,
}


class RuleCrashed(Exception):
    """A rule raised instead of returning a tree or None: a bug in that rule. The rewriter
    reports it as the error of the candidate the rule would have made."""


def apply_rule(name: str, tree: exp.Expression, profile: DatabaseProfile) -> exp.Expression | None:
    """The rule's rewrite of `tree`, or None when the rule does not apply or changes nothing.
    Raises RuleCrashed (the rule's own exception as its cause) when the rule raises; a
    RecursionError passes through, since it is the query that nests too deeply."""
    rule = RULES[name]
    try:
        out = rule(tree, profile)
    except RecursionError:
        raise
    except Exception as e:
        detail = " ".join(str(e).split())[:200]
        raise RuleCrashed(f"rule {name} crashed: {type(e).__name__}: {detail}") from e
    return out if out is not None and out.sql() != tree.sql() else None
