"""fetch: download IDX files with checksum verification."""

from __future__ import annotations

import hashlib
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from initbench.data.core import DataError, _atomic_write, _file_digest
from initbench.data.idx import IDX_SOURCES, _resolve_root


def fetch(
    name: str,
    root: str | Path | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download the four .gz IDX files of ``name`` into ``<root>/<name>/`` and return it.

    Files already there with the right MD5 are kept. Each download goes to a temporary
    name, is checked against the known MD5 and only then renamed into place; on a
    mismatch or network error the next mirror is tried, and when all fail a
    :class:`DataError` says where to put the files by hand. ``mirrors`` replaces the
    built-in list of base URLs; ``log`` receives one line per file.
    """
    if name not in IDX_SOURCES:
        fetchable = ", ".join(IDX_SOURCES)
        raise DataError(f"nothing to fetch for dataset {name!r}; fetchable: {fetchable}")
    source = IDX_SOURCES[name]
    dest = _resolve_root(root) / name
    say = log or (lambda line: None)
    for fname, md5 in source.md5.items():
        target = dest / fname
        if target.is_file() and _file_digest(target, "md5") == md5:
            say(f"{target}: present, checksum ok")
            continue
        url = _download_verified(fname, md5, mirrors or source.mirrors, target)
        say(f"{target}: downloaded from {url}, checksum ok")
    return dest


def _download_verified(fname: str, md5: str, mirrors: Sequence[str], target: Path) -> str:
    """Try each mirror in turn; return the URL that gave a file with the right MD5."""
    errors = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + fname
        try:
            _atomic_write(target, lambda f, url=url: _download_into(url, f, md5))
            return url
        except (OSError, DataError) as exc:  # URLError and timeouts are OSErrors
            errors.append(f"  {url}: {exc}")
    raise DataError(
        f"could not download {fname}:\n" + "\n".join(errors) + f"\nWithout a network, copy "
        f"{fname} (or the uncompressed file) into {target.parent} by hand."
    )


def _download_into(url: str, out: Any, md5: str) -> None:
    """Stream ``url`` into the open file ``out``; raise DataError if the MD5 differs."""
    digest = hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "initbench"})
    with urllib.request.urlopen(request, timeout=60) as response:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != md5:
        raise DataError(f"checksum mismatch: md5 {digest.hexdigest()}, expected {md5}")
