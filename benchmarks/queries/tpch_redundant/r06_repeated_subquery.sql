SELECT s_suppkey, s_name, r.rev
FROM supplier,
     (SELECT l_suppkey, sum(l_extendedprice * (1 - l_discount)) AS rev FROM lineitem
      WHERE l_shipdate >= DATE '1996-01-01' AND l_shipdate < DATE '1996-04-01' GROUP BY l_suppkey) AS r
WHERE s_suppkey = r.l_suppkey
  AND r.rev = (SELECT max(rev) FROM
               (SELECT l_suppkey, sum(l_extendedprice * (1 - l_discount)) AS rev FROM lineitem
                WHERE l_shipdate >= DATE '1996-01-01' AND l_shipdate < DATE '1996-04-01' GROUP BY l_suppkey) AS r2)
ORDER BY s_suppkey
