"""Which client serves a policy version, under the current settings."""
from __future__ import annotations

from functools import lru_cache

from db.models import PolicyVersion
from feedback.model_cache import resolve_model_dir
from feedback.policy.base import PolicyClient
from feedback.settings import Settings, get_settings


@lru_cache(maxsize=2)  # the current policy and the one it is compared with
def _local_client(model_dir: str, adapter_dir: str | None) -> PolicyClient:
    from feedback.policy.local import LocalPolicyClient

    return LocalPolicyClient(model_dir, adapter_dir=adapter_dir)


def client_for(version: PolicyVersion, *, settings: Settings | None = None) -> PolicyClient:
    settings = settings or get_settings()
    if settings.policy_backend == "openai":
        from feedback.policy.openai_compat import OpenAIPolicyClient

        return OpenAIPolicyClient(
            base_url=settings.policy_base_url,
            model=version.served_name or settings.policy_model,
            api_key=settings.policy_api_key.get_secret_value(),
        )
    model_dir = version.model_path or str(resolve_model_dir(version.base_model, cache_dir=settings.model_cache_dir))
    return _local_client(model_dir, version.adapter_path)
