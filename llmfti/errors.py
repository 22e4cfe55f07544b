"""The one exception hierarchy of llmfti.

Every message says what was wrong, the limit or expected value, and the fix. Each class
carries a stable ``code`` so callers (the CLI's JSON output, the HTTP layer) can map errors
without parsing messages. Classes that mean "the caller gave bad input" also subclass
``ValueError``; "a thing that should exist does not" also subclasses ``LookupError``.
"""

from __future__ import annotations


class LLMFTIError(Exception):
    """Base of every error llmfti raises on purpose."""

    code = "llmfti_error"

    def __init__(self, what: str, *, expected: str | None = None, fix: str | None = None):
        self.what = what
        self.expected = expected
        self.fix = fix
        parts = [what]
        if expected:
            parts.append(f"expected: {expected}")
        if fix:
            parts.append(f"fix: {fix}")
        super().__init__("; ".join(parts))

    def to_dict(self) -> dict[str, str | None]:
        return {"type": type(self).__name__, "code": self.code, "message": str(self)}


class ConfigError(LLMFTIError, ValueError):
    """A setting or configuration file is invalid."""

    code = "invalid_config"


class InvalidInputError(LLMFTIError, ValueError):
    """A caller passed an argument outside what is accepted."""

    code = "invalid_input"


class FilterError(InvalidInputError):
    """A structured search filter names an unknown field, operator or a mistyped value."""

    code = "invalid_filter"


class DocumentError(LLMFTIError, ValueError):
    """A document cannot be ingested; its message becomes the quarantine reason."""

    code = "bad_document"


class NotFoundError(LLMFTIError, LookupError):
    """A named thing (index, version, tag, feature group, model) does not exist."""

    code = "not_found"


class EmbedderMismatchError(LLMFTIError):
    """An index is opened with an embedder other than the one that built it."""

    code = "embedder_mismatch"


class SchemaMismatchError(LLMFTIError, ValueError):
    """Rows written to a table do not match its declared schema."""

    code = "schema_mismatch"


class DataValidationError(LLMFTIError, ValueError):
    """Rows failed a declared validation rule under the ``strict`` policy."""

    code = "validation_failed"


class StoreUnavailableError(LLMFTIError):
    """A store (Redis, object storage) cannot be reached; callers may degrade."""

    code = "store_unavailable"


class MissingDependencyError(LLMFTIError, ImportError):
    """An optional package needed for the requested feature is not installed."""

    code = "missing_dependency"
