"""`make bench-peers`: the platform beside dlt, dbt-core + dbt-postgres (microbatch) and SQLMesh, on the same data.

See benchmarks/peers/run.py and docs/benchmarks.md ("Peers side by side").
"""
