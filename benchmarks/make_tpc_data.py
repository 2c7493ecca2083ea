"""Build TPC-H SF1 and TPC-DS SF1 DuckDB files for the SQL rewrite benchmark, offline.

The project's duckdb cannot generate TPC data offline (its wheel lacks the tpch/tpcds
extensions and cannot download them). So: a throwaway venv under benchmarks/data/ gets
duckdb 1.5.5 plus the pip-packaged extensions, generates each benchmark and exports Parquet;
then the project's duckdb builds `.duckdb` files from the Parquet, with primary keys declared
so the rewriter's key-based rules have something to use.

    .venv/bin/python benchmarks/make_tpc_data.py [--sf 1] [--out benchmarks/data]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import venv
from pathlib import Path

import duckdb

GEN_VERSION = "1.5.5"

# Run inside the throwaway venv: load the extension from its wheel, generate, export Parquet.
GENERATE = r"""
import sys, duckdb, importlib.util
from pathlib import Path
bench, sf, out = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
pkg = Path(importlib.util.find_spec(f"duckdb_extension_{bench}").origin).parent
ext = next(pkg.rglob(f"{bench}.duckdb_extension"))
con = duckdb.connect()
con.execute(f"LOAD '{ext}'")
con.execute(f"CALL {'dbgen' if bench == 'tpch' else 'dsdgen'}(sf={sf})")
out.mkdir(parents=True, exist_ok=True)
for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall():
    con.execute(f"COPY {t} TO '{out / (t + '.parquet')}' (FORMAT parquet)")
"""

TPCH_KEYS = {
    "region": ["r_regionkey"], "nation": ["n_nationkey"], "part": ["p_partkey"],
    "supplier": ["s_suppkey"], "partsupp": ["ps_partkey", "ps_suppkey"],
    "customer": ["c_custkey"], "orders": ["o_orderkey"],
    "lineitem": ["l_orderkey", "l_linenumber"],
}
TPCDS_KEYS = {
    "call_center": ["cc_call_center_sk"], "catalog_page": ["cp_catalog_page_sk"],
    "customer": ["c_customer_sk"], "customer_address": ["ca_address_sk"],
    "customer_demographics": ["cd_demo_sk"], "date_dim": ["d_date_sk"],
    "household_demographics": ["hd_demo_sk"], "income_band": ["ib_income_band_sk"],
    "item": ["i_item_sk"], "promotion": ["p_promo_sk"], "reason": ["r_reason_sk"],
    "ship_mode": ["sm_ship_mode_sk"], "store": ["s_store_sk"], "time_dim": ["t_time_sk"],
    "warehouse": ["w_warehouse_sk"], "web_page": ["wp_web_page_sk"], "web_site": ["web_site_sk"],
}


def generator_python(data: Path) -> Path:
    env = data / "gen-venv"
    py = env / "bin" / "python"
    if not py.exists():
        venv.create(env, with_pip=True)
        pkgs = [f"duckdb=={GEN_VERSION}", f"duckdb-extension-tpch=={GEN_VERSION}",
                f"duckdb-extension-tpcds=={GEN_VERSION}"]
        subprocess.run([str(py), "-m", "pip", "install", "-q", *pkgs], check=True)
    return py


def build(bench: str, sf: float, data: Path, keys: dict[str, list[str]]) -> Path:
    target = data / f"{bench}_sf{sf:g}.duckdb"
    if target.exists():
        print(f"{target} exists, keeping it")
        return target
    parquet = data / f"{bench}_sf{sf:g}_parquet"
    if not parquet.exists():
        subprocess.run([str(generator_python(data)), "-c", GENERATE, bench, str(sf), str(parquet)],
                       check=True)
    partial = target.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    con = duckdb.connect(str(partial))
    for f in sorted(parquet.glob("*.parquet")):
        con.execute(f"CREATE TABLE {f.stem} AS SELECT * FROM read_parquet('{f}')")
        if f.stem in keys:
            con.execute(f"ALTER TABLE {f.stem} ADD PRIMARY KEY ({', '.join(keys[f.stem])})")
    con.execute("CHECKPOINT")
    con.close()
    partial.rename(target)
    print(f"built {target}")
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sf", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    ap.add_argument("--only", choices=["tpch", "tpcds"])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for bench, keys in (("tpch", TPCH_KEYS), ("tpcds", TPCDS_KEYS)):
        if args.only in (None, bench):
            build(bench, args.sf, args.out, keys)


if __name__ == "__main__":
    sys.exit(main())
