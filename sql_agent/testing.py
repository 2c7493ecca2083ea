"""A small deterministic shop database with declared keys, for tests, examples and docs."""

from __future__ import annotations

import os

import duckdb

SCHEMA = """
CREATE TABLE customers (c_id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, region VARCHAR,
                        segment VARCHAR);
CREATE TABLE products (p_id INTEGER PRIMARY KEY, category VARCHAR, price DOUBLE);
CREATE TABLE orders (o_id INTEGER PRIMARY KEY, c_id INTEGER REFERENCES customers (c_id),
                     o_date DATE, status VARCHAR);
CREATE TABLE items (o_id INTEGER REFERENCES orders (o_id), line INTEGER, p_id INTEGER,
                    qty INTEGER, amount DECIMAL(10, 2), discount DOUBLE,
                    PRIMARY KEY (o_id, line));
CREATE TABLE events (o_id INTEGER NOT NULL, kind VARCHAR NOT NULL, happened TIMESTAMP);  -- no key
"""

DATA = """
CREATE TEMP MACRO h(x, seed, n) AS CAST(hash(x, seed) % n AS INTEGER);
INSERT INTO customers SELECT i, 'customer ' || i,
    ['north', 'south', 'east', 'west', NULL][1 + h(i, 1, 5)],
    ['retail', 'business', 'public'][1 + h(i, 2, 3)] FROM range({customers}) t(i);
INSERT INTO products SELECT i, ['books', 'games', 'tools', 'food'][1 + h(i, 3, 4)],
    round(1 + h(i, 4, 10000) / 100.0, 2) FROM range({products}) t(i);
INSERT INTO orders SELECT i, h(i, 5, {customers}), DATE '2024-01-01' + h(i, 6, 365),
    ['open', 'shipped', 'returned'][1 + h(i, 7, 3)] FROM range({orders}) t(i);
INSERT INTO items SELECT o.i, l.j, h(o.i * 8 + l.j, 8, {products}), 1 + h(o.i * 8 + l.j, 9, 5),
    CAST(h(o.i * 8 + l.j, 10, 20000) / 100.0 AS DECIMAL(10, 2)),
    h(o.i * 8 + l.j, 11, 30) / 100.0
    FROM range({orders}) o(i), range(1 + h(o.i, 12, 4)) l(j);
INSERT INTO events SELECT o_id, 'created', o_date FROM orders
    UNION ALL SELECT o_id, status, o_date + INTERVAL 3 DAY FROM orders WHERE status <> 'open';
"""


def make_shop_db(path: str | os.PathLike, customers: int = 500, products: int = 200,
                 orders: int = 4000) -> str:
    """Write the shop database to `path` (a new DuckDB file) and return the path as a string."""
    con = duckdb.connect(str(path))
    con.execute(SCHEMA)
    con.execute(DATA.format(customers=customers, products=products, orders=orders))
    con.execute("CHECKPOINT")
    con.close()
    return str(path)
