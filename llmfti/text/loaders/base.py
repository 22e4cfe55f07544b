"""Walking inputs, reading bytes safely, and dispatching to the loader of each suffix."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from llmfti.errors import DocumentError
from llmfti.text.cleaning import clean_text
from llmfti.text.document import Document, Quarantined

Item = Document | Quarantined
# A loader turns one file into documents; it raises DocumentError for a bad file.
Loader = Callable[[Path, "LoadContext"], Iterator[Item]]


@dataclass(frozen=True)
class LoadContext:
    """What every loader needs to know about the build it serves."""

    source: str  # the path the user gave (file or folder), recorded on each document
    default_doc_id: str  # id for single-document files: the path relative to the folder given
    tenant: str
    max_file_bytes: int
    max_doc_chars: int
    origin: str = ""  # the file being read (absolute path; load_file fills it in)

    def document(self, doc_id: str, raw_text: str, file: Path, metadata: dict[str, object]) -> Document:
        """Clean ``raw_text`` and wrap it; empty or over-long text raises DocumentError."""
        text = clean_text(raw_text)
        if not text:
            raise DocumentError(
                f"{doc_id}: no text left after cleaning",
                expected="a document with readable text",
                fix="remove the file, or for a scanned PDF add a text layer (OCR) first",
            )
        if len(text) > self.max_doc_chars:
            raise DocumentError(
                f"{doc_id}: {len(text):,} characters is over the limit of {self.max_doc_chars:,}",
                fix="split the document, or raise ingest.max_doc_chars",
            )
        metadata = dict(metadata)
        mtime = datetime.fromtimestamp(file.stat().st_mtime, tz=UTC)
        tenant = str(metadata.pop("tenant", None) or self.tenant)
        event_time = metadata.pop("event_time", None) or mtime
        return Document(doc_id, text, self.source, _as_datetime(event_time, doc_id), tenant, metadata,
                        origin=self.origin)


def _as_datetime(value: object, doc_id: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise DocumentError(
            f"{doc_id}: event_time {value!r} is not a date",
            expected="ISO 8601, e.g. 2024-05-01T12:00:00Z",
            fix="correct or remove the event_time field",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def read_text(path: Path, ctx: LoadContext) -> str:
    """The file as UTF-8 text; binary, oversized or wrongly encoded files raise DocumentError."""
    data = read_bytes(path, ctx)
    if b"\x00" in data[:8192]:
        raise DocumentError(
            f"{path.name} looks binary (NUL bytes), not text",
            expected=f"a UTF-8 text file for suffix {path.suffix}",
            fix="convert it to text, or give it the right suffix (e.g. .pdf)",
        )
    return decode_utf8(data, path.name)


def decode_utf8(data: bytes, where: str) -> str:
    """``data`` as UTF-8 (a BOM is dropped); DocumentError names the first bad byte and its offset."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{where} is not valid UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 1]!r})",
            expected="UTF-8 encoded text",
            fix="re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None


def read_bytes(path: Path, ctx: LoadContext) -> bytes:
    size = path.stat().st_size
    if size > ctx.max_file_bytes:
        raise DocumentError(
            f"{path.name} is {size:,} bytes, over the limit of {ctx.max_file_bytes:,}",
            fix="split the file, or raise ingest.max_file_bytes",
        )
    return path.read_bytes()


def _loaders() -> dict[str, Loader]:
    from llmfti.text.loaders import html, jsonl, pdf, plain, squad

    return {
        ".md": plain.load,
        ".markdown": plain.load,
        ".txt": plain.load,
        ".html": html.load,
        ".htm": html.load,
        ".pdf": pdf.load,
        ".jsonl": jsonl.load,
        ".json": squad.load,
    }


def supported_suffixes() -> list[str]:
    return sorted(_loaders())


def _files(root: Path) -> Iterator[tuple[Path, str]]:
    """Files under ``root`` with their default doc id; hidden files and folders are skipped."""
    if root.is_file():
        yield root, root.name
        return
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not (path.is_file() or path.is_symlink()):
            continue  # a broken symlink is kept: reading it fails and it is quarantined
        yield path, f"{root.name}/{rel.as_posix()}"


def discover(
    paths: list[Path], *, tenant: str, max_file_bytes: int, max_doc_chars: int
) -> Iterator[Item]:
    """Yield every document under ``paths``, and every input that failed with its reason."""
    loaders = _loaders()
    for item in walk(paths):
        if isinstance(item, Quarantined):
            yield item
            continue
        path, source, default_id = item
        yield from load_file(path, LoadContext(source, default_id, tenant, max_file_bytes, max_doc_chars), loaders)


def missing_paths(paths: list[Path]) -> list[Path]:
    """The given paths that do not exist (a build checks them before it writes anything)."""
    return [p for p in paths if not p.exists()]


def walk(paths: list[Path]) -> Iterator[tuple[Path, str, str] | Quarantined]:
    """``(file, source, default doc id)`` of every file :func:`discover` would load, in its order."""
    for root in paths:
        if not root.exists():
            yield Quarantined(str(root), "path does not exist; fix: check the path given to the build",
                              origin=str(root.absolute()))
            continue
        source = str(root.resolve())
        for path, default_id in _files(root):
            yield path, source, default_id


def load_file(path: Path, ctx: LoadContext, loaders: dict[str, Loader] | None = None) -> Iterator[Item]:
    """The documents of one file, or the file quarantined with its reason (one file of a build)."""
    loaders = loaders or _loaders()
    origin = str(path.absolute())
    ctx = replace(ctx, origin=origin)
    loader = loaders.get(path.suffix.lower())
    if loader is None:
        yield Quarantined(
            str(path),
            f"unsupported file type {path.suffix or '(none)'!r}; supported: "
            f"{', '.join(sorted(loaders))}; fix: convert it or move it out of the folder",
            size_bytes=_size(path), origin=origin,
        )
        return
    try:
        for item in loader(path, ctx):  # a quarantined line or record names the file it came from
            yield replace(item, origin=origin) if isinstance(item, Quarantined) else item
    except DocumentError as exc:
        yield Quarantined(str(path), str(exc), ctx.default_doc_id, _size(path), origin)
    except OSError as exc:
        yield Quarantined(str(path), f"unreadable: {exc.strerror or exc}", ctx.default_doc_id, _size(path), origin)
    except Exception as exc:  # noqa: BLE001 - one file's loader failure never stops the build
        yield Quarantined(str(path), f"the {path.suffix} loader failed ({type(exc).__name__}: {exc}); its last "
                          "indexed documents are kept; fix: check or re-export the file", ctx.default_doc_id,
                          _size(path), origin)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
