"""An in-memory Kubernetes API server for the operator's integration tests and benchmark.

It speaks the real HTTP API (discovery, CRUD, the status subresource, merge / JSON / strategic
patches, list + watch with resource versions, finalizers, garbage collection, admission
webhooks, dry runs) for the resource types the operator touches, prunes unknown fields and
validates what is stored against the CRDs in crds/ and the upstream schemas vendored in
tests/upstream/ (OpenAPI and CEL rules), and authorizes every request with RBAC, refusing
like the real API server (422, 403, 413). See server.py for what it does and does not do.
"""

from .client import ApiError, Client
from .server import Emulator

__all__ = ["ApiError", "Client", "Emulator"]
