"""The ZeroGPU credentials, read from Secrets Manager through Powertools Parameters (cached)."""

from __future__ import annotations

from dataclasses import dataclass, field


class CredentialsNotConfigured(Exception):
    """The secret exists but is not filled in yet (or is unreadable)."""


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    api_key: str = field(repr=False)
    project_id: str | None = field(repr=False)


def load_credentials(secret_id: str, *, max_age: int = 300, force_fetch: bool = False) -> ApiCredentials:
    """Reads `{"api_key", "project_id"}` from the secret; the error names the secret, never its value."""
    from aws_lambda_powertools.utilities import parameters  # on the first API call only: not every run needs it

    try:
        value = parameters.get_secret(secret_id, transform="json", max_age=max_age, force_fetch=force_fetch)
    except parameters.exceptions.TransformParameterError:
        raise CredentialsNotConfigured(
            f'secret {secret_id} must hold JSON {{"api_key": "...", "project_id": "..."}}'
        ) from None
    except parameters.exceptions.GetParameterError as error:
        raise CredentialsNotConfigured(f"secret {secret_id} cannot be read: {error}") from None
    api_key = value.get("api_key") if isinstance(value, dict) else None
    if not isinstance(api_key, str) or not api_key.strip():
        raise CredentialsNotConfigured(
            f"secret {secret_id} has no api_key yet: fill it with "
            f'{{"api_key": "...", "project_id": "..."}} (see README, "Filling the secret")'
        )
    project_id = value.get("project_id")
    return ApiCredentials(
        api_key.strip(), project_id.strip() if isinstance(project_id, str) and project_id.strip() else None
    )
