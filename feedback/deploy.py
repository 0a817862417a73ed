"""Putting a policy version where sampling can reach it.

- local backend: nothing to push; the sampler loads base + adapter (merged once) the next time
  it samples from that version, and keeps the two most recent in memory.
- OpenAI-compatible server (vLLM): the adapter is loaded with POST /v1/load_lora_adapter under the
  version's name, from a new directory per round (vLLM caches adapters by name and path), so the
  next sampling request for that name uses it. The server must run with --enable-lora and a
  --max-lora-rank at least the adapter's rank, and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from db.models import PolicyVersion
from feedback.errors import UserError
from feedback.settings import Settings, get_settings


def adapter_rank(adapter_dir: str) -> int | None:
    config = Path(adapter_dir) / "adapter_config.json"
    return json.loads(config.read_text()).get("r") if config.exists() else None


def deploy(*, version: PolicyVersion, settings: Settings | None = None, max_lora_rank: int = 16,
           timeout_s: float = 120.0) -> str:
    """Make `version` servable; returns what was done (for the audit log and the page)."""
    settings = settings or get_settings()
    if settings.policy_backend == "local" or not version.adapter_path:
        return "local" if settings.policy_backend == "local" else "base model: nothing to load"
    rank = adapter_rank(version.adapter_path)
    if rank is not None and rank > max_lora_rank:
        raise UserError(f"Adapter rank {rank} exceeds the server's --max-lora-rank {max_lora_rank}.")
    base = settings.policy_base_url.rstrip("/")
    root = base[: -len("/v1")] if base.endswith("/v1") else base
    body = {"lora_name": version.served_name or version.name, "lora_path": str(Path(version.adapter_path).resolve())}
    request = urllib.request.Request(
        f"{root}/v1/load_lora_adapter", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {settings.policy_api_key.get_secret_value()}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            pass
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise UserError(f"The policy server refused the adapter ({exc.code}): {detail}") from None
    except (urllib.error.URLError, TimeoutError) as exc:
        raise UserError(f"Could not reach the policy server at {root}: {exc}") from None
    return f"loaded {body['lora_name']} on {root}"
