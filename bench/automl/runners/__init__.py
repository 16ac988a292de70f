"""One module per framework; each runs as `<its venv's python> -m bench.automl.runners.<name>`.

They share one command line (see common.py) and write the same two files into --out:
`predictions.csv` (`proba:<class>` columns, or `prediction`) and `info.json` (fit seconds,
the models the framework actually trained, versions). Only pandas is assumed besides the
framework itself, so they run unchanged in every venv.
"""
