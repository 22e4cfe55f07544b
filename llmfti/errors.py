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


class AuthenticationError(LLMFTIError):
    """A request carries no API key, or one that is not configured."""

    code = "invalid_api_key"


class RateLimitError(LLMFTIError):
    """A caller exceeded its request budget; ``retry_after_s`` says when to try again."""

    code = "rate_limit_exceeded"

    def __init__(self, what: str, *, retry_after_s: float, expected: str | None = None, fix: str | None = None):
        self.retry_after_s = retry_after_s
        super().__init__(what, expected=expected, fix=fix)


class RequestLimitError(InvalidInputError):
    """A request is over a size, count or token limit; ``param`` names the offending field."""

    code = "request_limit_exceeded"

    def __init__(
        self,
        what: str,
        *,
        param: str | None = None,
        code: str | None = None,
        expected: str | None = None,
        fix: str | None = None,
    ):
        self.param = param
        if code:
            self.code = code
        super().__init__(what, expected=expected, fix=fix)


class GenerationError(LLMFTIError):
    """A text generator failed or timed out; the agent may fall back to the extractive one."""

    code = "generation_failed"


class TokenizerMismatchError(LLMFTIError):
    """A model version is loaded with a tokenizer or chat template other than the one it was trained with."""

    code = "tokenizer_mismatch"


class PromotionRefusedError(LLMFTIError):
    """A model version may not take an alias (no passing eval run, or nothing to roll back to)."""

    code = "promotion_refused"


class NotReproducibleError(LLMFTIError):
    """A frozen training dataset no longer recreates the rows it recorded (its data was altered)."""

    code = "not_reproducible"
