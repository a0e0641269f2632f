"""
Documents read from files by reference, so corpus text never passes through XCom.

``source_url`` is a file or a folder: a local path, ``file://``, or any ``ObjectStoragePath`` URL
(``s3://``, ``gs://``, ...; its Airflow connection via ``source_conn_id``). Folders are walked with
``source_glob``. Each file becomes one document whose ``source`` is its path relative to the folder,
which stays the same wherever the corpus is mounted. Runs in the worker.

Listing and reading are two steps: ``list_sources`` walks the folder once (one paginated LIST on
object storage, one ``stat`` per local file) and returns each file's listing metadata (ETag or
version id and size; local: size and ``mtime_ns``), so a caller can decide from the listing which
bodies it needs; ``read_documents`` reads those. ``load_documents`` does both for every file.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import functools
import json
import logging
import os
import stat
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_milvus.exceptions import MilvusProviderError

log = logging.getLogger(__name__)

# Listing keys that change whenever an object's body does (S3, GCS, Azure, generic fsspec), in preference order.
_VERSION_KEYS = ("VersionId", "ETag", "etag", "generation", "md5Hash", "content_md5")
_TIME_KEYS = ("LastModified", "mtime", "last_modified", "updated")
READERS = 16  # object-storage GETs in flight while reading


@dataclass(frozen=True)
class Listed:
    """
    One file of the listing: its ``source``, where to read it, and its listing metadata (or None).

    ``location`` is the file itself (``pathlib.Path`` or ``ObjectStoragePath``), or, with ``folder_url``,
    the folder it was listed under (``folder_url``: that folder as a string). Then ``path`` is built
    only when the file is read (an ``ObjectStoragePath`` costs ~50 us to build, a ``Path`` ~25 us:
    seconds for a 100,000-file listing whose files mostly stay unread) and ``url`` is a string join.
    """

    source: str
    location: Any
    listing: str | None  # JSON of what the listing says about the body; None: unknown, always read
    folder_url: str | None = None

    @functools.cached_property
    def path(self) -> Any:
        return self.location if self.folder_url is None else self.location / self.source

    @property
    def url(self) -> str:
        """Where to read the file, as a string ``_path`` reads back (``str(path)``, without building ``path``)."""
        return str(self.location) if self.folder_url is None else f"{self.folder_url}/{self.source}"


def load_documents(
    source_url: str,
    *,
    glob: str | list[str] = "**/*",
    conn_id: str | None = None,
    encoding: str = "utf-8",
) -> list[dict[str, Any]]:
    """``[{"page_content", "metadata": {"source"}}]``, one per non-empty file, sorted by source."""
    return read_documents(list_sources(source_url, glob=glob, conn_id=conn_id), encoding=encoding)


def list_sources(
    source_url: str,
    *,
    glob: str | list[str] = "**/*",
    conn_id: str | None = None,
) -> list[Listed]:
    """
    Every file under ``source_url`` matching ``glob``, sorted by source, with its listing metadata (no body read).

    Object storage: one recursive listing (``find``: paginated LIST requests, 1,000 objects a page, whose
    entries carry ETag and size), no request per object.
    """
    root = _path(source_url, conn_id)
    patterns = [glob] if isinstance(glob, str) else list(glob)
    try:
        if isinstance(root, Path):
            exists, is_dir = root.exists(), root.is_dir()
            if not exists:
                listed = []
            elif is_dir:
                listed = _walk_local(root, patterns)
            else:
                listed = [Listed(root.name, root, local_listing(root.stat()))]
        else:
            root.fs.invalidate_cache(_bare(root))  # fsspec caches listings per process: this run lists afresh
            found = {n: i for n, i in root.fs.find(_bare(root), detail=True).items() if i.get("type") == "file"}
            if list(found) == [_bare(root).strip("/")]:  # the URL names one object
                exists, is_dir = True, False
                listed = [Listed(root.name, root, object_listing(next(iter(found.values()))))]
            else:
                exists, is_dir = bool(found) or root.exists(), True
                listed = _walk_objects(root, found, patterns)
    except Exception as error:
        raise MilvusProviderError(f"Cannot read source_url {source_url!r}: {type(error).__name__}: {error}") from None
    if not exists:
        raise MilvusProviderError(f"source_url {source_url!r} does not exist. Check the path (and source_conn_id).")
    listed.sort(key=lambda item: item.source)
    for item in listed:
        _check_name(item)
    log.info("Listed %d files under %s", len(listed), source_url)
    return listed


def read_documents(listed: Sequence[Listed], *, encoding: str = "utf-8") -> list[dict[str, Any]]:
    """
    Read the bodies of ``listed``: ``[{"page_content", "metadata": {"source"}}]``, empty files skipped.

    Object storage is read ``READERS`` objects at a time (each GET waits on the network); local files one by one.
    """
    if any(not isinstance(item.location, Path) for item in listed) and len(listed) > 1:
        with concurrent.futures.ThreadPoolExecutor(READERS, thread_name_prefix="milvus-read") as pool:
            texts = list(pool.map(functools.partial(_read, encoding=encoding), listed))
    else:
        texts = [_read(item, encoding=encoding) for item in listed]
    documents = []
    for item, text in zip(listed, texts):
        if not text.strip():
            log.info("Skipping empty file %s", _shown(item.path))
            continue
        documents.append({"page_content": text, "metadata": {"source": item.source}})
    log.info("Read %d documents from %d files", len(documents), len(listed))
    return documents


def read_unread(
    documents: list[dict[str, Any]], sources: Collection[Any], *, conn_id: str | None, encoding: str
) -> list[dict[str, Any]]:
    """
    Return ``documents`` with the unread ones of ``sources`` read (``core/listing.py``), in their place.

    The write core calls this for files the worker left unread on their listing whose ledger entry then
    failed verification. A file that is empty now drops out, as it would from a listing.
    """
    chosen = [d for d in documents if d.get("unread") and d["metadata"]["source"] in sources]
    # No listing: the object may have changed since it was listed, so its size is asked again, not taken from it.
    listed = [Listed(d["metadata"]["source"], _path(d["path"], conn_id), None) for d in chosen]
    for item in listed:
        if not isinstance(item.path, Path):  # fsspec caches what it listed (ETags included): read the object as it is
            item.path.fs.invalidate_cache(_bare(item.path))
    read = {d["metadata"]["source"]: d for d in read_documents(listed, encoding=encoding)}
    for document in chosen:
        if document["metadata"]["source"] in read and document.get("listing"):
            read[document["metadata"]["source"]]["listing"] = document["listing"]
    chosen_ids = {id(d) for d in chosen}
    return [d for d in documents if id(d) not in chosen_ids] + list(read.values())


def _read(item: Listed, *, encoding: str) -> str:
    try:
        return _body(item).decode(encoding)
    except UnicodeDecodeError as error:
        raise MilvusProviderError(
            f"File {_shown(item.path)} is not valid {encoding} text ({error.reason} at byte {error.start}). "
            "Convert it, exclude it with source_glob, or set source_encoding to its encoding (e.g. "
            'source_encoding="cp1252" for legacy Windows text).'
        ) from None
    except OSError as error:
        raise MilvusProviderError(f"Cannot read file {_shown(item.path)}: {error}") from None


def _body(item: Listed) -> bytes:
    """
    Return the bytes of a file; an object's in one GET from its first byte (``cat_file(start=0)``).

    Not through ``open()``: fsspec's file asks ``info`` for the object's size or ETag, which it answers
    from the listing it cached by scanning the folder's entries, so reading N objects of an N-object
    folder cost O(N^2) (100,000 objects: ~40 GETs a second). An object listed as empty is not requested.
    """
    size = _listed_size(item)
    if isinstance(item.location, Path) or size is None:
        return bytes(item.path.read_bytes())
    if size == 0:
        return b""
    return bytes(item.path.fs.cat_file(_bare(item.path), start=0))


def _listed_size(item: Listed) -> int | None:
    if item.listing is None:
        return None
    size = json.loads(item.listing).get("size")
    return int(size) if isinstance(size, int) else None


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


def object_listing(info: dict[str, Any]) -> str | None:
    """
    Return the listing metadata of an object-store entry (an fsspec ``info`` dict): its version or ETag, and its size.

    Without a version or ETag, the modification time stands in. None when the listing says nothing that
    changes with the body: such objects are always read.
    """
    size = info.get("size", info.get("Size"))
    for key in _VERSION_KEYS:
        if info.get(key):
            return json.dumps({key.lower(): str(info[key]), "size": size}, sort_keys=True)
    for key in _TIME_KEYS:
        if info.get(key) is not None:
            value = info[key]
            stamp = value.isoformat() if hasattr(value, "isoformat") else str(value)
            return json.dumps({"modified": stamp, "size": size}, sort_keys=True)
    return None


def local_listing(info: os.stat_result) -> str:
    """Return the listing metadata of a local file: size and modification time in nanoseconds (as rsync decides)."""
    return json.dumps({"mtime_ns": info.st_mtime_ns, "size": info.st_size}, sort_keys=True)


def _check_name(item: Listed) -> None:
    """Refuse a file name that is not UTF-8 (Python keeps its bytes as surrogates): it cannot become a source."""
    try:
        item.source.encode()
    except UnicodeEncodeError:
        raise MilvusProviderError(
            f"File name {_shown(item.path)} is not valid UTF-8, so it cannot be stored as the document's source. "
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


def _matcher(globs: list[str]) -> Any:
    """Whether a relative path matches a pattern (``**/`` also matches the top level)."""
    patterns = {p for g in globs for p in ((g, g[3:]) if g.startswith("**/") else (g,))}
    return lambda relative: any(fnmatch.fnmatch(relative, p) for p in patterns)


def _walk_local(root: Path, globs: list[str]) -> list[Listed]:
    """
    Regular files under ``root`` (and links to them; linked folders are not entered, as ``Path.rglob``).

    Names are joined as strings and no path object is built per file (~25 us each: 2.5 s for 100,000
    files); ``Listed.path`` builds it when the file is read.
    """
    wanted = _matcher(globs)
    top = str(root)
    listed = []
    for folder, _, names in os.walk(top):
        prefix = folder[len(top) :].strip(os.sep)
        for name in names:
            relative = f"{prefix}{os.sep}{name}" if prefix else name
            if not wanted(relative):
                continue
            try:
                info = os.stat(os.path.join(folder, name))
            except OSError:  # a broken link
                continue
            if stat.S_ISREG(info.st_mode):
                listed.append(Listed(relative, root, local_listing(info), folder_url=top))
    return listed


def _walk_objects(root: Any, found: dict[str, dict[str, Any]], globs: list[str]) -> list[Listed]:
    wanted = _matcher(globs)
    folder = _bare(root).strip("/") + "/"  # fsspec names objects "bucket/key", without a leading slash
    url = str(root).rstrip("/")
    listed = []
    for name, info in found.items():
        relative = name.lstrip("/").removeprefix(folder)
        if wanted(relative):
            listed.append(Listed(relative, root, object_listing(info), folder_url=url))
    return listed


def _bare(path: Any) -> str:
    return path.path if hasattr(path, "path") else str(path)  # ObjectStoragePath or pathlib.Path
