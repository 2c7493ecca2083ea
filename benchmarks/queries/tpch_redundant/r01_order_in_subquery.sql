SELECT l_returnflag, count(*) AS n
FROM (SELECT l_returnflag, l_orderkey FROM lineitem ORDER BY l_shipdate, l_comment) AS s
GROUP BY l_returnflag
ORDER BY l_returnflag
