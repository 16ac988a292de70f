"""aiml024: Kubernetes-native, GitOps-first AutoML."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aiml024")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
