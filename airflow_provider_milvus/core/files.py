"""
Documents read from files by reference, so corpus text never passes through XCom.

``source_url`` is a file or a folder: a local path, ``file://``, or any ``ObjectStoragePath`` URL
(``s3://``, ``gs://``, ...; its Airflow connection via ``source_conn_id``). Folders are walked with
``source_glob``. Each file becomes one document whose ``source`` is its path relative to the folder,
which stays the same wherever the corpus is mounted. Runs in the worker.
"""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path, PurePosixPath
from typing import Any

from airflow_provider_milvus.exceptions import MilvusProviderError

log = logging.getLogger(__name__)


def load_documents(
    source_url: str,
    *,
    glob: str | list[str] = "**/*",
    conn_id: str | None = None,
    encoding: str = "utf-8",
) -> list[dict[str, Any]]:
    """``[{"page_content", "metadata": {"source"}}]``, one per non-empty file, sorted by source."""
    root = _path(source_url, conn_id)
    try:
        exists, is_dir = root.exists(), root.is_dir()
    except Exception as error:
        raise MilvusProviderError(f"Cannot read source_url {source_url!r}: {type(error).__name__}: {error}") from None
    if not exists:
        raise MilvusProviderError(f"source_url {source_url!r} does not exist. Check the path (and source_conn_id).")
    patterns = [glob] if isinstance(glob, str) else list(glob)
    files = sorted(_walk(root, patterns), key=str) if is_dir else [root]
    documents = []
    for path in files:
        source = _relative(path, root) if is_dir else path.name
        _check_name(source, path)
        try:
            text = path.read_bytes().decode(encoding)
        except UnicodeDecodeError as error:
            raise MilvusProviderError(
                f"File {_shown(path)} is not valid {encoding} text ({error.reason} at byte {error.start}). "
                "Convert it, exclude it with source_glob, or set source_encoding to its encoding (e.g. "
                'source_encoding="cp1252" for legacy Windows text).'
            ) from None
        except OSError as error:
            raise MilvusProviderError(f"Cannot read file {_shown(path)}: {error}") from None
        if not text.strip():
            log.info("Skipping empty file %s", _shown(path))
            continue
        documents.append({"page_content": text, "metadata": {"source": source}})
    log.info("Read %d documents from %d files under %s", len(documents), len(files), source_url)
    return documents


def check_encoding(encoding: str) -> str:
    """Return ``encoding`` when Python knows it (``utf-8``, ``cp1252``, ``latin-1``, ...); else say so."""
    import codecs

    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise MilvusProviderError(
            f"source_encoding={encoding!r} is not a known text encoding; use e.g. 'utf-8', 'cp1252' or 'latin-1'."
        ) from None
    return encoding


def _check_name(source: str, path: Any) -> None:
    """Refuse a file name that is not UTF-8 (Python keeps its bytes as surrogates): it cannot become a source."""
    try:
        source.encode()
    except UnicodeEncodeError:
        raise MilvusProviderError(
            f"File name {_shown(path)} is not valid UTF-8, so it cannot be stored as the document's source. "
            "Rename the file (e.g. `convmv -f latin1 -t utf8`), or exclude it with source_glob."
        ) from None


def _shown(path: Any) -> str:
    """Return the path quoted and readable, undecodable bytes as backslash escapes (never as surrogates)."""
    text = _bare(path)
    return f"'{text.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')}'"


def _path(url: str, conn_id: str | None) -> Any:
    """Return a local path as ``pathlib.Path`` (fast to walk), anything else as ``ObjectStoragePath``."""
    if "://" not in url or url.startswith("file://"):
        return Path(url.removeprefix("file://"))
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url, conn_id=conn_id) if conn_id else ObjectStoragePath(url)


def _walk(root: Any, globs: list[str]) -> list[Any]:
    """Files under ``root`` whose relative path matches a pattern (``**/`` also matches the top level)."""
    patterns = {p for g in globs for p in ((g, g[3:]) if g.startswith("**/") else (g,))}
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and any(fnmatch.fnmatch(_relative(path, root), p) for p in patterns)
    ]


def _relative(path: Any, root: Any) -> str:
    # On the bare paths: universal-pathlib 0.2 (Airflow 3.0) returns the whole URL from relative_to.
    return PurePosixPath(_bare(path)).relative_to(PurePosixPath(_bare(root))).as_posix()


def _bare(path: Any) -> str:
    return path.path if hasattr(path, "path") else str(path)  # ObjectStoragePath or pathlib.Path
