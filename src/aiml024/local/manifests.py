"""Reading manifests from files and directories, as `kubectl apply -f` does."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..api import AnyObject, Experiment, SpecError, parse_object

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def manifest_files(path: Path) -> list[Path]:
    if not path.exists():
        raise SpecError(str(path), ["no such file or directory"])
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file())
    if not files:
        raise SpecError(str(path), [f"no manifests ({', '.join(MANIFEST_SUFFIXES)}) in directory"])
    return files


def load_manifests(path: Path, resolve_paths: bool = False) -> list[AnyObject]:
    """Parse every document under `path`; every problem in every file is reported at once.

    With `resolve_paths`, a relative data path in an Experiment is made absolute against the
    manifest's directory (the embedded control plane runs from anywhere; a cluster never sees
    local paths).
    """
    objects: list[AnyObject] = []
    problems: list[str] = []
    for file in manifest_files(path):
        try:
            documents = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
        except yaml.YAMLError as error:
            problems.append(f"{file}: not valid YAML: {error}")
            continue
        except (OSError, UnicodeDecodeError) as error:
            problems.append(f"{file}: cannot read: {error}")
            continue
        for index, document in enumerate(documents):
            source = f"{file}" + (f" (document {index + 1})" if len(documents) > 1 else "")
            try:
                obj = parse_object(document, source)
            except SpecError as error:
                problems.append(str(error))
                continue
            if resolve_paths and isinstance(obj, Experiment):
                _resolve_data_uri(obj, file.parent)
            objects.append(obj)
    if problems:
        raise SpecError(str(path), problems)
    names = [(o.kind, o.metadata.name) for o in objects]
    duplicates = sorted({f"{k}/{n}" for k, n in names if names.count((k, n)) > 1})
    if duplicates:
        raise SpecError(str(path), [f"{d} is defined more than once" for d in duplicates])
    return objects


def _resolve_data_uri(exp: Experiment, base: Path) -> None:
    uri = exp.spec.data.uri
    if uri is None or "://" in uri or Path(uri).is_absolute():
        return
    exp.spec.data.uri = (base / uri).resolve().as_uri()
