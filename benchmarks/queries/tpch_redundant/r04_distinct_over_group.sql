SELECT count(*) AS orders, max(q) AS largest
FROM (SELECT DISTINCT l_orderkey, sum(l_quantity) AS q FROM lineitem GROUP BY l_orderkey) AS s
