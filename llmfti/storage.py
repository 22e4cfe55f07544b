"""Where llmfti keeps its tables and artifacts: a local folder or an object store.

Setting ``storage.uri`` (env ``LLMFTI_STORAGE__URI``) is ``s3://bucket/prefix``, ``gs://bucket/prefix``,
``az://container/prefix`` or a local folder; unset, it is ``data_dir``. Under it::

    lancedb/     every LanceDB table (chunks, feature groups, registry, inference log, feedback, eval runs,
                 quarantine): opened by :func:`llmfti.lance.connect` with ``storage.options``
    registry/    model-version artifacts (adapter, pinned tokenizer, model card), written and read by
                 :class:`ArtifactStore` (pyarrow's S3 / GCS / Azure / local file systems)

URIs are joined as text, never as :class:`pathlib.Path` (which would turn ``s3://b`` into ``s3:/b``).
Credentials never pass through settings: Lance and pyarrow read them from the environment
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``AZURE_STORAGE_ACCOUNT_KEY``), and :func:`check_storage_options` refuses them in ``storage.options``, so
nothing llmfti writes (tables, logs, model cards) can contain them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmfti.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    import pyarrow.fs

    from llmfti.config import Settings

OBJECT_STORE_SCHEMES = ("s3", "gs", "az")
MANIFEST = ".llmfti-manifest.json"
_CREDENTIAL_KEY = re.compile(r"secret|password|token|credential|access_key|key_id|account_key|sas|_key$", re.I)


def check_storage_uri(value: str) -> str:
    """``value`` as a storage root (trailing ``/`` removed), or a :class:`ConfigError` naming the fix."""
    uri = value.strip().rstrip("/")
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):(/*)(.*)$", uri)
    if match and len(match.group(1)) > 1:  # one letter: a Windows drive, i.e. a path
        scheme, slashes, rest = match.group(1).lower(), match.group(2), match.group(3)
        if scheme not in OBJECT_STORE_SCHEMES:
            raise ConfigError(f"storage.uri {value!r} has the scheme {scheme!r}, which llmfti cannot store tables in",
                              expected=f"one of {', '.join(s + '://' for s in OBJECT_STORE_SCHEMES)} or a local folder",
                              fix="use s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or a path")
        if slashes != "//" or not rest or rest.startswith("/"):
            raise ConfigError(f"storage.uri {value!r} is not a well-formed {scheme}:// URI",
                              expected=f"{scheme}://BUCKET/optional/prefix",
                              fix=f"write it as {scheme}://{rest.lstrip('/') or 'BUCKET'}")
        return f"{scheme}://{rest}"
    if not uri:
        raise ConfigError("storage.uri is empty", expected="an object-store URI or a folder",
                          fix="unset storage.uri to keep everything under data_dir")
    return uri


def check_storage_options(options: dict[str, str]) -> dict[str, str]:
    """``options`` unchanged, unless one of them holds a credential (refused: credentials come from the env)."""
    for key in options:
        if _CREDENTIAL_KEY.search(key):
            raise ConfigError(
                f"storage.options[{key!r}] looks like a credential; llmfti does not take credentials from settings, "
                "so that they can never be written into tables, logs or model cards",
                expected="non-secret options only: endpoint, region, allow_http, account_name, ...",
                fix="remove it from storage.options and export it in the environment instead (AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_KEY)",
            )
    return {str(k): str(v) for k, v in options.items()}


def is_object_store(location: str) -> bool:
    return location.split("://", 1)[0] in OBJECT_STORE_SCHEMES and "://" in location


def storage_root(settings: Settings) -> str:
    """The storage root: ``storage.uri``, or ``data_dir`` when it is unset."""
    return settings.storage.uri if settings.storage.uri else str(settings.data_dir)


def storage_location(settings: Settings, *parts: str) -> str:
    """``parts`` under the storage root, joined as text for URIs and as a path for folders."""
    return join_location(storage_root(settings), *parts)


def join_location(root: str, *parts: str) -> str:
    if is_object_store(root):
        return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(root, *parts))


def lance_storage_options(settings: Settings) -> dict[str, str] | None:
    """The ``storage_options`` for :func:`lancedb.connect` (None for a local folder)."""
    if not is_object_store(storage_root(settings)):
        return None
    return dict(settings.storage.options)


def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def filesystem(location: str, options: dict[str, str]) -> tuple[pyarrow.fs.FileSystem, str]:
    """(pyarrow file system, path inside it) for a local folder or an object-store location.

    Options understood: ``endpoint`` (or ``aws_endpoint``/``endpoint_url``), ``region`` (or ``aws_region``),
    ``allow_http`` and, for Azure, ``account_name``; credentials are read from the environment.
    """
    import pyarrow.fs as pafs

    if not is_object_store(location):
        return pafs.LocalFileSystem(), str(Path(location).absolute())
    scheme, path = location.split("://", 1)
    endpoint = options.get("endpoint") or options.get("aws_endpoint") or options.get("endpoint_url")
    http = _truthy(options.get("allow_http"))
    if endpoint and "://" in endpoint:
        http = http or endpoint.startswith("http://")
        endpoint = endpoint.split("://", 1)[1]
    if scheme == "s3":
        region = options.get("region") or options.get("aws_region") or os.environ.get("AWS_REGION")
        fs: pafs.FileSystem = pafs.S3FileSystem(region=region or "us-east-1", endpoint_override=endpoint,
                                                scheme="http" if http else "https")
    elif scheme == "gs":
        fs = pafs.GcsFileSystem(endpoint_override=endpoint, scheme="http" if http else "https")
    else:  # az
        account = options.get("account_name") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
        if not account:
            raise ConfigError(f"storage.uri {location!r} needs an Azure storage account name",
                              fix="set storage.options.account_name or AZURE_STORAGE_ACCOUNT_NAME")
        fs = pafs.AzureFileSystem(account_name=account, account_key=os.environ.get("AZURE_STORAGE_ACCOUNT_KEY"),
                                  blob_storage_authority=endpoint, blob_storage_scheme="http" if http else None)
    return fs, path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ArtifactStore:
    """Folders of files (registry artifacts) under the storage root, local or on an object store.

    A folder is complete when its manifest (sizes + SHA-256 of every file, written last) exists;
    :meth:`download` copies one into a local folder and checks every file against that manifest.
    """

    def __init__(self, settings: Settings):
        self.root = storage_root(settings)
        self.options = dict(settings.storage.options)
        self.remote = is_object_store(self.root)

    def location(self, *parts: str) -> str:
        return join_location(self.root, *parts)

    def _fs(self, location: str) -> tuple[pyarrow.fs.FileSystem, str]:
        return filesystem(location, self.options)

    def put(self, local: Path, location: str) -> None:
        """Store the folder ``local`` at ``location``, complete with its manifest.

        A local store moves ``local`` there (one rename); an object store gets a copy (files first, the
        manifest last) and ``local`` keeps the files plus the manifest, a valid cached copy.
        """
        if self.remote:
            manifest = self.upload(local, location)
            (Path(local) / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
            return
        manifest = {"files": {p.relative_to(local).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
                              for p in sorted(Path(local).rglob("*")) if p.is_file() and p.name != MANIFEST}}
        (Path(local) / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        Path(local).rename(location)

    def upload(self, local: Path, location: str) -> dict[str, Any]:
        """Copy the files of ``local`` to ``location``, then its manifest (the completion mark)."""
        fs, base = self._fs(location)
        files = {p.relative_to(local).as_posix(): p for p in sorted(Path(local).rglob("*")) if p.is_file()}
        manifest = {"files": {name: {"size": p.stat().st_size, "sha256": _sha256(p)} for name, p in files.items()
                              if name != MANIFEST}}
        for name, path in files.items():
            if name == MANIFEST:
                continue
            target = f"{base}/{name}"
            fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with open(path, "rb") as src, fs.open_output_stream(target) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        self.write_text(location, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        return manifest

    def write_text(self, location: str, name: str, text: str) -> None:
        fs, base = self._fs(location)
        fs.create_dir(base, recursive=True)
        with fs.open_output_stream(f"{base}/{name}") as dst:
            dst.write(text.encode("utf-8"))

    def read_text(self, location: str, name: str) -> str | None:
        import pyarrow.fs as pafs

        fs, base = self._fs(location)
        if fs.get_file_info(f"{base}/{name}").type != pafs.FileType.File:
            return None
        with fs.open_input_stream(f"{base}/{name}") as src:
            return src.read().decode("utf-8")

    def complete(self, location: str) -> bool:
        return self.read_text(location, MANIFEST) is not None

    @staticmethod
    def is_copy(local: Path, manifest: str) -> bool:
        """True if ``local`` holds this manifest and every file it lists, at the listed size."""
        mark = Path(local) / MANIFEST
        if not mark.is_file() or mark.read_text(encoding="utf-8") != manifest:
            return False
        files = json.loads(manifest)["files"]
        return all((Path(local) / n).is_file() and (Path(local) / n).stat().st_size == m["size"]
                   for n, m in files.items())

    def download(self, location: str, local: Path) -> Path:
        """``location`` copied into the folder ``local`` (replaced atomically once every file checked out)."""
        raw = self.read_text(location, MANIFEST)
        if raw is None:
            raise NotFoundError(f"{location} holds no complete artifact folder (no {MANIFEST})",
                                expected="a folder whose upload finished",
                                fix="re-register the model version; its upload did not complete")
        manifest = json.loads(raw)
        fs, base = self._fs(location)
        local = Path(local)
        staging = local.with_name(f".{local.name}.incoming-{uuid.uuid4().hex[:8]}")
        try:
            for name, meta in manifest["files"].items():
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with fs.open_input_stream(f"{base}/{name}") as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                if target.stat().st_size != meta["size"] or _sha256(target) != meta["sha256"]:
                    raise NotFoundError(f"{location}/{name} does not match its manifest (size or SHA-256)",
                                        expected=f"{meta['size']} bytes, sha256 {meta['sha256'][:12]}...",
                                        fix="re-register the model version; its stored artifacts are corrupt")
            (staging / MANIFEST).write_text(raw, encoding="utf-8")
            if local.exists():
                shutil.rmtree(local)
            staging.rename(local)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return local

    def delete(self, location: str) -> None:
        fs, base = self._fs(location)
        try:
            fs.delete_dir(base)
        except (FileNotFoundError, OSError):
            pass
