"""Counts an archive table the way an analyst would, with DuckDB over the
Parquet files of every given tier folder (hive partitioning on):
prints JSON with the rows, the distinct event ids, the rows per day, the
column types, and the partition columns DuckDB derived from the paths.

usage: archive_counts.py TABLE FOLDER [FOLDER ...]

A FOLDER may be s3://bucket/prefix: DuckDB then reads it through fsspec
(s3fs) from the S3 server at $KUSANAGI_TEST_S3_ENDPOINT (its own httpfs
extension cannot be downloaded on the build machines).
"""
import json
import os
import sys

import duckdb

table, folders = sys.argv[1], sys.argv[2:]
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
    print(json.dumps({"rows": 0, "distinct_ids": 0, "per_day": {}, "types": {}}))
    sys.exit(0)
src = f"read_parquet({globs!r}, hive_partitioning=true)"
rows, distinct = con.execute(f"SELECT count(*), count(DISTINCT event_id) FROM {src}").fetchone()
per_day = {
    str(day): n
    for day, n in con.execute(
        f"SELECT CAST(\"timestamp\" AS DATE) AS d, count(*) FROM {src} GROUP BY d ORDER BY d"
    ).fetchall()
}
by_path = con.execute(
    f"SELECT count(*) FROM {src} WHERE CAST(\"timestamp\" AS DATE) <> CAST(dt AS DATE)"
).fetchone()[0]
types = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
print(
    json.dumps(
        {
            "rows": rows,
            "distinct_ids": distinct,
            "per_day": per_day,
            "rows_in_wrong_dt": by_path,
            "types": types,
        }
    )
)
