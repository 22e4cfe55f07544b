"""Prompt templates: files in ``configs/prompts/``, identified by ``name@sha256(content)[:12]``.

A template renders the *messages* of a request (a system message holding the retrieved passages
and the user's features, then the conversation with the last user turn rendered). Turning those
messages into the model's input string is the generator's job, with its own chat template, so
training and serving share one rendering (see ``llmfti.llm.tokenization``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from llmfti.errors import ConfigError, NotFoundError
from llmfti.naming import check_name

SUFFIX = ".yaml"
_REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt template file, parsed; ``id`` changes whenever a byte of the file does."""

    name: str
    id: str
    system: str
    user: str
    description: str = ""
    path: Path | None = None
    _compiled: tuple[Any, Any] = field(default=(None, None), repr=False, compare=False)

    def render(
        self,
        *,
        question: str,
        passages: Sequence[Mapping[str, Any]] = (),
        user: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        history: Sequence[Mapping[str, str]] = (),
    ) -> list[dict[str, str]]:
        """The messages to send: our system message, the earlier turns, the rendered last turn."""
        system_tpl, user_tpl = self._compiled
        variables = {
            "question": question,
            "passages": [dict(p, n=i + 1) for i, p in enumerate(passages)],
            "user": dict(user or {}),
            "context": dict(context or {}),
        }
        messages = [{"role": "system", "content": system_tpl.render(**variables).strip()}]
        messages.extend({"role": m["role"], "content": m["content"]} for m in history)
        messages.append({"role": "user", "content": user_tpl.render(**variables).strip()})
        return messages


def prompt_id(name: str, content: bytes) -> str:
    return f"{name}@{hashlib.sha256(content).hexdigest()[:12]}"


def resolve_dir(directory: Path) -> Path:
    """``directory`` as given, or relative to the repository when a relative path is not found here."""
    if directory.is_dir() or directory.is_absolute():
        return directory
    beside_repo = _REPO_ROOT / directory
    return beside_repo if beside_repo.is_dir() else directory


def list_prompts(directory: Path) -> list[str]:
    folder = resolve_dir(directory)
    return sorted(p.stem for p in folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []


def load_prompt(name: str, directory: Path) -> PromptTemplate:
    """Parse and compile ``<directory>/<name>.yaml``; errors name the file and the fix."""
    check_name(name, what="prompt name")
    path = resolve_dir(directory) / f"{name}{SUFFIX}"
    if not path.is_file():
        raise NotFoundError(
            f"prompt template {name!r} not found in {resolve_dir(directory)}",
            expected=f"one of {list_prompts(directory)}",
            fix="set agent.prompt to an existing template, or add the file",
        )
    return _load(path, path.stat().st_mtime_ns)


@lru_cache(maxsize=64)
def _load(path: Path, _mtime_ns: int) -> PromptTemplate:
    from jinja2 import StrictUndefined, TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    content = path.read_bytes()
    try:
        data = yaml.safe_load(content) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"prompt file {path} is not valid YAML: {exc}", fix="correct its syntax") from exc
    if not isinstance(data, dict) or not isinstance(data.get("system"), str) or not isinstance(
        data.get("user"), str
    ):
        raise ConfigError(
            f"prompt file {path} must hold 'system' and 'user' Jinja2 strings",
            expected="keys: description (optional), system, user",
            fix="see configs/prompts/rag_answer.yaml for the format",
        )
    unknown = set(data) - {"description", "system", "user"}
    if unknown:
        raise ConfigError(f"prompt file {path} has unknown keys {sorted(unknown)}", fix="remove them")
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False)
    try:
        compiled = (env.from_string(data["system"]), env.from_string(data["user"]))
    except TemplateSyntaxError as exc:
        raise ConfigError(
            f"prompt file {path}: Jinja2 syntax error on line {exc.lineno}: {exc.message}",
            fix="correct the template",
        ) from exc
    return PromptTemplate(
        name=path.stem,
        id=prompt_id(path.stem, content),
        system=data["system"],
        user=data["user"],
        description=str(data.get("description", "")),
        path=path,
        _compiled=compiled,
    )
