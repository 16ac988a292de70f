"""Pure reconcile decisions: the one place both control planes (local and kopf) decide."""
