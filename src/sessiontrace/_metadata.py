"""Automatic metadata, computed once per process (never on the hot path).

``mlflow.source.name``, ``mlflow.source.type`` and, inside a git work tree,
``mlflow.source.git.commit`` / ``.branch`` / ``.repoURL``. Git facts are read from
the ``.git`` files directly: no subprocess, no GitPython. Credentials embedded in a
remote URL are removed before the URL is recorded.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

__all__ = ["SOURCE_NAME", "SOURCE_TYPE", "automatic_metadata"]

SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
GIT_COMMIT = "mlflow.source.git.commit"
GIT_BRANCH = "mlflow.source.git.branch"
GIT_REPO_URL = "mlflow.source.git.repoURL"


def _source_name() -> str | None:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        return str(spec.name)  # python -m package.module
    path = getattr(main, "__file__", None)
    if path:
        return os.path.basename(str(path))
    if sys.argv and sys.argv[0] and sys.argv[0] != "-c":
        return os.path.basename(sys.argv[0])
    return None


def _source_type() -> str:
    if "ipykernel" in sys.modules or "google.colab" in sys.modules:
        return "NOTEBOOK"
    main = sys.modules.get("__main__")
    if getattr(main, "__file__", None) or getattr(main, "__spec__", None):
        return "LOCAL"
    return "UNKNOWN"


def _find_git_dir(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / ".git"
        if candidate.is_dir():
            return candidate
        if candidate.is_file():  # worktree or submodule: "gitdir: <path>"
            text = candidate.read_text(errors="replace").strip()
            if text.startswith("gitdir:"):
                target = Path(text[7:].strip())
                return target if target.is_absolute() else (folder / target).resolve()
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    common = git_dir
    commondir = git_dir / "commondir"
    if commondir.is_file():
        common = (git_dir / commondir.read_text().strip()).resolve()
    for base in (git_dir, common):
        loose = base / ref
        if loose.is_file():
            return loose.read_text().strip() or None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(errors="replace").splitlines():
            parts = line.split(" ", 1)
            if len(parts) == 2 and parts[1] == ref:
                return parts[0]
    return None


_CREDENTIALS = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]+@", re.IGNORECASE)


def _remote_url(git_dir: Path) -> str | None:
    common = git_dir
    commondir = git_dir / "commondir"
    if commondir.is_file():
        common = (git_dir / commondir.read_text().strip()).resolve()
    config = common / "config"
    if not config.is_file():
        return None
    section = None
    for raw in config.read_text(errors="replace").splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == '[remote "origin"]' and line.replace(" ", "").startswith("url="):
            url = line.split("=", 1)[1].strip()
            return _CREDENTIALS.sub(r"\1", url)
    return None


def git_metadata(start: Path) -> dict[str, str]:
    git_dir = _find_git_dir(start.resolve())
    if git_dir is None:
        return {}
    out: dict[str, str] = {}
    head_file = git_dir / "HEAD"
    if not head_file.is_file():
        return {}
    head = head_file.read_text().strip()
    if head.startswith("ref:"):
        ref = head[4:].strip()
        out[GIT_BRANCH] = ref.removeprefix("refs/heads/")
        commit = _resolve_ref(git_dir, ref)
    else:
        commit = head  # detached HEAD
    if commit and re.fullmatch(r"[0-9a-f]{40,64}", commit):
        out[GIT_COMMIT] = commit
    url = _remote_url(git_dir)
    if url:
        out[GIT_REPO_URL] = url
    return out


def _script_dir() -> Path:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path:
        return Path(path).resolve().parent
    return Path.cwd()


def automatic_metadata() -> dict[str, str]:
    """The metadata every trace of this process starts with; failures yield fewer keys."""
    out: dict[str, str] = {}
    try:
        name = _source_name()
        if name:
            out[SOURCE_NAME] = name
        out[SOURCE_TYPE] = _source_type()
        out.update(git_metadata(_script_dir()))
    except (OSError, ValueError, UnicodeError):
        pass
    return out
