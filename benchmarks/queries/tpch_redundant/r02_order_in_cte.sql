WITH recent AS (
    SELECT o_orderkey, o_orderpriority, o_totalprice FROM orders
    WHERE o_orderdate >= DATE '1996-01-01' ORDER BY o_orderdate, o_totalprice DESC
)
SELECT o_orderpriority, count(*) AS n, sum(o_totalprice) AS total
FROM recent GROUP BY o_orderpriority ORDER BY o_orderpriority
