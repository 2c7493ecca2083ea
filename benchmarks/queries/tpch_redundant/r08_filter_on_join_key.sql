SELECT count(*) AS n, sum(l.l_quantity) AS qty
FROM orders AS o JOIN lineitem AS l ON o.o_orderkey = l.l_orderkey
WHERE o.o_orderkey < 600000 AND o.o_orderstatus = 'O'
