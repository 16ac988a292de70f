"""The aiml024 kopf operator: `kopf run -m aiml024.operator` or `python -m aiml024.operator`.

Importing this package registers every handler (aiml024.operator.handlers) with kopf's
default registry. The decisions live in aiml024.reconcile, aiml024.policy, aiml024.compiler
and, for the SLO judgement only a cluster makes, aiml024.operator.slo; the reads and writes on
the API go through aiml024.operator.kube (kubernetes_asyncio).
"""

from . import handlers

__all__ = ["handlers"]
