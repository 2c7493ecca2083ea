SELECT count(*) AS n, sum(o_totalprice) AS total
FROM (SELECT DISTINCT o_orderkey, o_custkey, o_totalprice FROM orders
      WHERE o_orderdate >= DATE '1995-01-01') AS s
