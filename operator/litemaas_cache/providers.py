"""Provider of a model: LiteLLM's custom_llm_provider, or inferred from the model name when that is null."""

from __future__ import annotations

from functools import lru_cache

from .vocabulary import UNKNOWN_PROVIDER

# Ordered (prefix, provider) pairs matched against the lower-cased model name.
_NAME_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("text-embedding-", "openai"),
    ("dall-e", "openai"),
    ("whisper", "openai"),
    ("claude", "anthropic"),
    ("gemini", "gemini"),
    ("mistral", "mistral"),
    ("mixtral", "mistral"),
    ("codestral", "mistral"),
    ("command", "cohere"),
    ("granite", "watsonx"),
    ("llama", "meta_llama"),
    ("meta-llama", "meta_llama"),
    ("deepseek", "deepseek"),
    ("qwen", "qwen"),
)


@lru_cache(maxsize=4096)
def infer_provider(model: str) -> str:
    """Guess the provider from a model name such as 'openai/gpt-4o' or 'claude-3-5-sonnet'."""
    name = model.strip().lower()
    if "/" in name:
        prefix = name.split("/", 1)[0]
        if prefix:
            return prefix
    for start, provider in _NAME_PREFIXES:
        if name.startswith(start):
            return provider
    return UNKNOWN_PROVIDER


def provider_of(model: str, custom_llm_provider: str | None) -> str:
    if custom_llm_provider:
        return custom_llm_provider
    return infer_provider(model)
