"""`python -m aiml024.operator [--namespace NS ...] [--liveness URL]`: kopf, cluster-wide."""

from __future__ import annotations

import argparse

import kopf

from . import handlers  # noqa: F401 - registers the handlers


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m aiml024.operator")
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="serve only these namespaces (default: all)",
    )
    parser.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="kopf's liveness endpoint"
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    kopf.configure(verbose=args.verbose)
    # One replica with a Recreate rollout: no peering objects needed.
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
    )


if __name__ == "__main__":
    main()
