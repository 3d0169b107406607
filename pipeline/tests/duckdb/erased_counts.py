"""Counts the rows of an archive table over every given tier folder with
DuckDB, as an analyst would, and how many of them name each of a list of
account ids (in actor_id or target_id; account_id for transitions; none
for audit, which holds no account ids).

usage: erased_counts.py TABLE IDS_FILE FOLDER [FOLDER ...]

IDS_FILE holds one account id per line. Prints JSON:
{"rows": N, "named": M, "per_id": {id: n, ...}} where M counts each row
once, however many of the ids it names.

A FOLDER may be s3://bucket/prefix, read through fsspec (s3fs) from the S3
server at $KUSANAGI_TEST_S3_ENDPOINT.
"""
import json
import os
import sys

import duckdb

table, ids_file, folders = sys.argv[1], sys.argv[2], sys.argv[3:]
ids = [line.strip() for line in open(ids_file) if line.strip()]
con = duckdb.connect()
s3 = None
if any(f.startswith("s3://") for f in folders):
    import s3fs

    s3 = s3fs.S3FileSystem(
        key="test", secret="test", endpoint_url=os.environ["KUSANAGI_TEST_S3_ENDPOINT"]
    )
    con.register_filesystem(s3)


def has_table(folder):
    if folder.startswith("s3://"):
        return bool(s3.glob(f"{folder}/{table}/**/*.parquet"))
    return os.path.isdir(os.path.join(folder, table))


globs = [f"{f}/{table}/**/*.parquet" for f in folders if has_table(f)]
if not globs:
    print(json.dumps({"rows": 0, "named": 0, "per_id": {}}))
    sys.exit(0)
con.execute("CREATE TABLE ids (id VARCHAR)")
con.executemany("INSERT INTO ids VALUES (?)", [[i] for i in ids])
src = f"read_parquet({globs!r}, hive_partitioning=true)"
cols = {"transitions": ["account_id"], "audit": []}.get(table, ["actor_id", "target_id"])
con.execute(f"CREATE VIEW t AS SELECT * FROM {src}")
rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
if not cols:
    # A table without account ids (the audit trail): no row can name one.
    print(json.dumps({"rows": rows, "named": 0, "per_id": {i: 0 for i in ids}}))
    sys.exit(0)
named_where = " OR ".join(f"{c} IN (SELECT id FROM ids)" for c in cols)
named = con.execute(f"SELECT count(*) FROM t WHERE {named_where}").fetchone()[0]
per_id = {i: 0 for i in ids}
for i, n in con.execute(
    "SELECT ids.id, count(*) FROM t JOIN ids ON "
    + " OR ".join(f"t.{c} = ids.id" for c in cols)
    + " GROUP BY ids.id"
).fetchall():
    per_id[i] = n
print(json.dumps({"rows": rows, "named": named, "per_id": per_id}))
