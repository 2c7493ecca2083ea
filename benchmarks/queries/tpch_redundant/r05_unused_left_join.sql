SELECT o.o_orderpriority, count(*) AS n, sum(o.o_totalprice) AS total
FROM orders AS o
LEFT JOIN customer AS c ON c.c_custkey = o.o_custkey
WHERE o.o_orderstatus = 'F'
GROUP BY o.o_orderpriority
ORDER BY o.o_orderpriority
