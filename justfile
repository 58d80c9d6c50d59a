# Everyday recipes; the README's two commands work without `just`.

# install with test extras and run the whole suite
test:
    pip install -q '.[test]' && python -m pytest

# the nightly job on the embedded demo
demo:
    pip install -q . && shardplan nightly --out out/nightly

# every benchmark, each printing a table and writing benchmarks/results/<name>.json
bench:
    python benchmarks/sharding_gain.py
    python benchmarks/scale.py
    python benchmarks/bounds.py
    python -m benchmarks.vbp
    python benchmarks/forecast.py
    python benchmarks/forecast_dask.py
    python benchmarks/preallocation.py
    python benchmarks/replication.py
    python benchmarks/replan.py
    python benchmarks/whatif.py
    python benchmarks/report.py
    python benchmarks/routing.py

# regenerate the embedded demo from the seeded generator
regen-demo:
    python -m shardplan.data.generator --demo

# syntax and import check of every module
lint:
    python -m compileall -q shardplan planner models forecasting executors data benchmarks tests
