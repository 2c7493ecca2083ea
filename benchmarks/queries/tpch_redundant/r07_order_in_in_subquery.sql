SELECT o_orderstatus, count(*) AS n
FROM orders
WHERE o_custkey IN (SELECT c_custkey FROM customer WHERE c_mktsegment = 'BUILDING' ORDER BY c_name, c_address)
GROUP BY o_orderstatus
ORDER BY o_orderstatus
