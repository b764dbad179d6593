"""Hugging Face hub cache folders (``~/.cache/huggingface/hub``), resolved locally: never the network.

huggingface_hub (file_download.py) lays one downloaded model repo out as::

    models--{org}--{name}/            the repo folder (``/`` of the repo id spelled ``--``)
        blobs/{etag}                  the bytes: sha256 of an LFS file, git blob sha1 of any other
        refs/{revision}               one line: the 40-hex commit the revision (``main``) points at
        snapshots/{commit}/{file}     relative symlinks ``../../blobs/{etag}`` (copies where the
                                      file system has no symlinks)

``resolve`` turns the repo folder into its ``refs/main`` snapshot (or the revision asked for: a ref
name or a commit-sha prefix) and names the confinement root of every read below it: the repo folder.
A snapshot's files are symlinks into ``blobs/``, outside the snapshot folder, so confining a read to
the snapshot folder (engine/files.py, for every other source) would refuse the whole cache; a link
leaving the repo folder is still refused. Paths are recognised by their names only (``models--*``,
``snapshots/<commit>``), never by contacting the hub.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from electra_bridge.schemas import FormatError
from electra_bridge.schemas.files import read_regular

REPO_PREFIX = "models--"
SNAPSHOTS, REFS, BLOBS = "snapshots", "refs", "blobs"
DEFAULT_REVISION = "main"
#: a commit sha as the hub writes it into refs/ and names snapshot folders with
COMMIT = re.compile(r"[0-9a-f]{40}")
#: a ref name (``main``, ``pr/1``): no ``..``, no absolute path, nothing that leaves refs/
_REF_NAME = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")
#: the shortest commit prefix taken as a revision (git's default abbreviation)
MIN_PREFIX = 7
#: a refs/ file holds one sha and a newline; anything larger is not one
_MAX_REF_BYTES = 1024


def _absolute(path: Path) -> Path:
    # normalised but not resolved: a snapshot's own entries are symlinks, their names are what count
    return Path(os.path.abspath(path))


def is_repo_folder(path: Path) -> bool:
    """``path`` is a ``models--org--name`` folder laid out by huggingface_hub (it has snapshots/ or refs/)."""
    path = Path(path)
    return (path.name.startswith(REPO_PREFIX) and len(path.name) > len(REPO_PREFIX) and path.is_dir()
            and ((path / SNAPSHOTS).is_dir() or (path / REFS).is_dir()))


def repo_root(path: Path) -> Path | None:
    """The repo folder (``models--org--name``, resolved) that ``path`` is or lies in through
    ``snapshots/<commit>/``; None when ``path`` is no part of a hub cache. Never raises."""
    here = _absolute(Path(path))
    if is_repo_folder(here):
        return here.resolve()
    for child, parent in zip((here, *here.parents), here.parents):
        if parent.name == SNAPSHOTS and is_repo_folder(parent.parent):
            return parent.parent.resolve()
    return None


def repo_id(repo: Path) -> str:
    """``google/electra-small-discriminator`` for ``models--google--electra-small-discriminator``
    (the hub refuses ``--`` inside names, so the spelling is reversible)."""
    return Path(repo).name.removeprefix(REPO_PREFIX).replace("--", "/")


def _fix(repo: Path) -> str:
    present = sorted(p.name for p in (repo / SNAPSHOTS).iterdir() if p.is_dir()) if (repo / SNAPSHOTS).is_dir() else []
    hint = (f"pass a snapshot folder that is present ({', '.join(f'{repo / SNAPSHOTS / s}' for s in present[:3])})"
            if present else f"or pass a snapshot folder ({repo / SNAPSHOTS}/<commit>/)")
    return f"download it with `huggingface-cli download {repo_id(repo)}` (offline: no network is used here), {hint}"


def snapshot(repo: Path, revision: str | None = None) -> Path:
    """The snapshot folder of ``revision`` (default ``main``) in the repo folder ``repo``: a ref name
    read from ``refs/<revision>``, or a commit sha (or a prefix of at least MIN_PREFIX hex digits)
    naming one snapshot folder. FormatError naming what is missing and how to get it otherwise."""
    repo = Path(repo)
    revision = revision or DEFAULT_REVISION
    snapshots = repo / SNAPSHOTS
    if re.fullmatch(r"[0-9a-f]+", revision) and len(revision) >= MIN_PREFIX and not (repo / REFS / revision).exists():
        hits = sorted(p for p in snapshots.glob(f"{revision}*") if p.is_dir()) if snapshots.is_dir() else []
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise FormatError(f"{repo}: revision {revision} matches {len(hits)} snapshots "
                              f"({', '.join(p.name for p in hits)}); give more of the commit sha")
        raise FormatError(f"{repo}: no snapshot of commit {revision} (snapshots/{revision}*); {_fix(repo)}")
    if not _REF_NAME.fullmatch(revision) or ".." in revision.split("/"):
        raise FormatError(f"{repo}: {revision!r} is neither a ref name (main, pr/1) nor a commit sha")
    ref = repo / REFS / revision
    if not ref.is_file():
        raise FormatError(f"{repo} is a Hugging Face cache folder without refs/{revision} (the file naming the "
                          f"commit to read); {_fix(repo)}")
    commit = read_regular(ref, _MAX_REF_BYTES, what=f"refs/{revision} file").decode("ascii", "replace").strip()
    if not COMMIT.fullmatch(commit):
        raise FormatError(f"{ref}: holds {commit[:60]!r}, not a 40-hex commit sha; {_fix(repo)}")
    folder = snapshots / commit
    if not folder.is_dir():
        raise FormatError(f"{repo}: refs/{revision} names commit {commit}, whose snapshot folder "
                          f"snapshots/{commit}/ is missing (an interrupted download?); {_fix(repo)}")
    return folder


def resolve(path: Path, revision: str | None = None) -> tuple[Path, Path | None]:
    """(the path to read, the confinement root of that read or None).

    * a repo folder ``models--org--name``: its ``refs/main`` snapshot (``revision``: another ref or a
      commit prefix), and the repo folder;
    * a snapshot folder ``models--org--name/snapshots/<commit>/`` or anything inside one: ``path``
      unchanged (``revision`` must then be None), and the repo folder;
    * anything else: ``path`` unchanged and None (the caller confines to the folder of ``path``).
    """
    path = Path(path)
    here = _absolute(path)
    if is_repo_folder(here):
        return snapshot(path, revision), here.resolve()
    root = repo_root(path)
    if root is not None and revision is not None:
        raise FormatError(f"{path} is already one snapshot; a revision applies to the repo folder {root} only")
    if root is None and revision is not None:
        raise FormatError(f"{path} is not a Hugging Face cache folder (models--org--name); a revision needs one")
    return path, root
