"""Settings from the environment, read at call time so tests (and the CLI) can override them.

Every field is documented; `tests/test_layout.py` checks that the README lists each one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{PROJECT_ROOT / 'var' / 'feedback.sqlite3'}",
        description="SQLAlchemy URL: a SQLite file (default) or postgresql+psycopg://user:pw@host/db.",
    )
    policy_backend: Literal["local", "openai"] = Field(
        default="local",
        description="Where responses come from: 'local' (in-process transformers on CPU) or "
        "'openai' (any OpenAI-compatible server, e.g. `vllm serve`).",
    )
    policy_base_url: str = Field(
        default="http://127.0.0.1:8000/v1",
        description="Base URL of the OpenAI-compatible policy server (used when POLICY_BACKEND=openai).",
    )
    policy_model: str = Field(
        default=DEFAULT_MODEL_NAME,
        description="Base policy model: a directory, a name inside MODEL_CACHE_DIR (local backend), "
        "or the model name the server serves (openai backend).",
    )
    policy_api_key: SecretStr = Field(
        default=SecretStr("EMPTY"),
        description="API key sent to the OpenAI-compatible policy server "
                    "(vLLM accepts any unless started with --api-key).",
    )
    model_cache_dir: Path = Field(
        default=PROJECT_ROOT / ".cache" / "models",
        description="Where prepared models (safetensors directories) are kept.",
    )
    policies_dir: Path = Field(
        default=PROJECT_ROOT / "var" / "policies",
        description="Where training rounds write checkpoints and adapters (a new directory per round).",
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        description="Anthropic API key for the AI judge. A secret: never logged, stored or passed to child processes.",
    )
    judge_anthropic_model: str = Field(
        default="claude-sonnet-4-6", description="Model the anthropic judge backend uses unless one is given."
    )
    judge_base_url: str | None = Field(
        default=None, description="Base URL of an OpenAI-compatible judge server (the openai judge backend)."
    )
    judge_model: str | None = Field(default=None, description="Model name the OpenAI-compatible judge server serves.")
    judge_api_key: SecretStr = Field(
        default=SecretStr("EMPTY"),
        description="Key for the OpenAI-compatible judge server; a secret like ANTHROPIC_API_KEY.",
    )
    hf_token: SecretStr | None = Field(
        default=None,
        description="Hugging Face token for `export --push-to-hub`. A secret: never logged, stored or passed to "
        "child processes.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Server secret key: each webhook's signing secret is derived from it (unset: one is generated "
        "once into var/secret_key, mode 0600). A secret: passed only to workers that deliver webhooks.",
    )
    judge_timeout_s: float = Field(
        default=60.0, description="Seconds one judge request may take (per attempt) before it is retried."
    )
    judge_max_retries: int = Field(
        default=4, description="Retries of a judge request on 429/5xx/529/timeouts, with backoff, before the pair "
        "is recorded as failed."
    )
    job_launcher: str = Field(
        default="local", description="How job workers start: 'local' (a detached process) or 'ray' (Ray Jobs)."
    )
    ray_address: str = Field(default="http://127.0.0.1:8265", description="Ray dashboard address for JOB_LAUNCHER=ray.")
    ray_job_python: str | None = Field(
        default=None,
        description="Python the Ray job runs (default: this interpreter; the cluster must share the venv).",
    )
    import_max_bytes: int = Field(
        default=50 * 1024 * 1024, description="Largest prompt file accepted by an import, in bytes."
    )
    import_max_rows: int = Field(default=100_000, description="Most rows one import may hold.")
    import_max_prompt_chars: int = Field(
        default=32_000, description="Longest prompt (all message contents together) or reference, in characters."
    )
    api_max_body_bytes: int = Field(
        default=10 * 1024 * 1024, ge=0,
        description="Largest request body the HTTP API accepts, in bytes; a larger one is refused with 413.",
    )
    api_rate_limit_per_minute: int = Field(
        default=600, ge=0,
        description="Requests one API token may make per minute, per app process (a token bucket holding a "
        "minute's worth); more get 429 with Retry-After. 0: no limit.",
    )
    session_days: float = Field(
        default=14, gt=0,
        description="Days a browser sign-in lasts (its HttpOnly cookie) before signing in again.",
    )
    sign_in_client_limit: int = Field(
        default=20, ge=0,
        description="Failed sign-ins one client (an IPv4 address, an IPv6 /64) may make in 15 minutes, whatever "
        "the usernames, before its sign-ins are refused for the rest of them. 0: no per-client limit.",
    )


def get_settings() -> Settings:
    """A fresh read of the environment each call (cheap; keeps tests and child processes honest)."""
    return Settings()
