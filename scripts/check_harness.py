"""Checks the harness's non-Kafka real parts before the suites run:
the S3-protocol server answers the S3 API, and DuckDB reads Parquet with
hive partitioning the way analysts will query the archive."""
import os
import sys
import tempfile

import boto3
import duckdb

endpoint = os.environ["KUSANAGI_TEST_S3_ENDPOINT"]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id="test",
    aws_secret_access_key="test",
    region_name="us-east-1",
)
s3.create_bucket(Bucket="kusanagi-harness-check")
s3.put_object(Bucket="kusanagi-harness-check", Key="hello.txt", Body=b"hello")
body = s3.get_object(Bucket="kusanagi-harness-check", Key="hello.txt")["Body"].read()
assert body == b"hello", body

with tempfile.TemporaryDirectory() as d:
    part = os.path.join(d, "events", "tenant=demo", "dt=2099-01-01")
    os.makedirs(part)
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT 'e1' AS event_id, 5::BIGINT AS amount) TO '{part}/f.parquet' (FORMAT parquet, COMPRESSION zstd)"
    )
    row = con.execute(
        f"SELECT tenant, dt, amount FROM read_parquet('{d}/events/**/*.parquet', hive_partitioning=true)"
    ).fetchone()
    assert row == ("demo", __import__("datetime").date(2099, 1, 1), 5), row

print(f"harness: S3 server at {endpoint} OK; DuckDB {duckdb.__version__} reads hive-partitioned Parquet OK")
sys.exit(0)
