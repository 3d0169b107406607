"""Runs every DuckDB query of docs/analysts.md against an archive, so the
analysts' guide stays true: the ```sql blocks between "## DuckDB" and
"## Athena". The guide's first block (the views over every tier) is
replaced by views over ARCHIVE_ROOT's hot tier; each other query must run
and return rows; prints how many each returned.

usage: analyst_queries.py DOCS_ANALYSTS_MD ARCHIVE_HOT_ROOT
"""
import re
import sys

import duckdb

doc, hot = sys.argv[1], sys.argv[2]
text = open(doc, encoding="utf-8").read()
section = text.split("## DuckDB", 1)[1].split("## Athena", 1)[0]
blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
assert blocks and blocks[0].lstrip().startswith("CREATE VIEW events"), blocks[:1]
con = duckdb.connect()
for table in ["events", "screenings", "transitions"]:
    con.execute(
        f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{hot}/{table}/**/*.parquet', "
        "hive_partitioning = true, union_by_name = true)"
    )
# The guide's examples name a day and an account; use ones this archive has.
day, start, account = con.execute(
    'SELECT dt, min("timestamp"), target_id FROM events GROUP BY dt, target_id '
    "ORDER BY count(*) DESC LIMIT 1"
).fetchone()
for sql in blocks[1:]:
    sql = (
        sql.replace("DATE '2026-11-28'", f"DATE '{day}'")
        .replace("TIMESTAMP '2026-11-28 12:00:00'", f"TIMESTAMP '{start}'")
        .replace("TIMESTAMP '2026-11-28 12:05:00'", f"TIMESTAMP '{start}' + INTERVAL 1 HOUR")
        .replace("'acct_42'", f"'{account}'")
    )
    rows = con.execute(sql).fetchall()
    first = sql.strip().splitlines()[0]
    assert rows, f"no rows from: {first}"
    print(f"{len(rows)} rows: {first}")
