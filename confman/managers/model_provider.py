"""Model providers of an LLM gateway (namespace ``model_provider``, a collection keyed by
provider name).

A provider is one account at one vendor: where to reach it, with which credentials, which
models it offers and how hard the gateway may use it. Credentials are
``pydantic.SecretStr``: encrypted at rest, masked everywhere they are shown. Health and
latency are runtime state and are not kept here.

Cross-manager rule: a provider that a router deployment still uses cannot be deleted,
disabled, or stop offering the deployed model; the error names the router aliases.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    StringConstraints,
    model_validator,
)

from ..exceptions import FieldError, NotFound, ValidationFailed
from ..manager import ConfigurationManager
from ._rules import Loc, refuse

if TYPE_CHECKING:
    from ..hub import ConfigHub
    from .router import RouterConfig

__all__ = [
    "PROVIDER_NAME",
    "ModelProvider",
    "ModelProviderConfigurationManager",
    "ProviderType",
]

PROVIDER_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]|_(?!_)){0,62}$")
"""Provider names: lower-case letters, digits, ``-`` and single ``_`` (they appear in
``CONFMAN_MODEL_PROVIDER__<NAME>__<FIELD>`` variables, where ``__`` separates parts)."""

ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class ProviderType(StrEnum):
    OPENAI = "openai"
    AZURE_OPENAI = "azure_openai"
    ANTHROPIC = "anthropic"
    GOOGLE = "google"
    BEDROCK = "bedrock"
    OLLAMA = "ollama"
    OPENAI_COMPATIBLE = "openai_compatible"


# What the router rule's messages tell of, besides the provider itself.
_ROUTER = frozenset({"router"})

# What each type needs beyond the common fields.
_NEEDS_API_KEY = {
    ProviderType.OPENAI,
    ProviderType.AZURE_OPENAI,
    ProviderType.ANTHROPIC,
    ProviderType.GOOGLE,
}
_NEEDS_BASE_URL = {ProviderType.AZURE_OPENAI, ProviderType.OLLAMA, ProviderType.OPENAI_COMPATIBLE}
_NEEDS_API_VERSION = {ProviderType.AZURE_OPENAI}
_TAKES_API_VERSION = {ProviderType.AZURE_OPENAI, ProviderType.ANTHROPIC, ProviderType.GOOGLE}


def _required_for(types: set[ProviderType]) -> dict[str, Any]:
    """The JSON Schema note of a field `_fits_type` requires for some types only, so forms
    can say when (the schema alone would call it optional)."""
    return {"x-required-when": {"type": [t.value for t in ProviderType if t in types]}}


class ModelProvider(BaseModel):
    """One provider account.

    Attributes:
        type: the vendor API spoken.
        base_url: the API's URL; required for ``azure_openai`` (the resource endpoint),
            ``ollama`` and ``openai_compatible``; the vendor's public URL otherwise.
        api_key: the API key; required for ``openai``, ``azure_openai``, ``anthropic``
            and ``google``.
        api_version: required for ``azure_openai``; allowed for ``anthropic`` and
            ``google``; refused elsewhere (it would be silently ignored).
        organization: OpenAI organization id, where one is used.
        aws_region, aws_access_key_id, aws_secret_access_key: ``bedrock`` only; the
            key pair is optional (an instance role may be used) but comes as a pair.
        extra_headers: extra HTTP headers sent to the provider (values are secrets:
            they often carry tokens).
        models: provider model names offered; empty means "whatever the router sends".
        enabled: a disabled provider receives no traffic.
        rpm_limit, tpm_limit: requests / tokens per minute the gateway may send.
        timeout_seconds, connect_timeout_seconds: per request.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: ProviderType
    base_url: HttpUrl | None = Field(default=None, json_schema_extra=_required_for(_NEEDS_BASE_URL))
    api_key: SecretStr | None = Field(default=None, json_schema_extra=_required_for(_NEEDS_API_KEY))
    api_version: Annotated[str, StringConstraints(min_length=1, max_length=50)] | None = Field(
        default=None, json_schema_extra=_required_for(_NEEDS_API_VERSION)
    )
    organization: str | None = None
    aws_region: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")] | None = (
        Field(default=None, json_schema_extra=_required_for({ProviderType.BEDROCK}))
    )
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    extra_headers: dict[str, SecretStr] = Field(default_factory=dict)
    models: list[ModelName] = Field(default_factory=list)
    enabled: bool = True
    rpm_limit: int | None = Field(default=None, gt=0)
    tpm_limit: int | None = Field(default=None, gt=0)
    timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=600)

    @model_validator(mode="after")
    def _fits_type(self) -> ModelProvider:
        t = self.type
        problems: list[tuple[Loc, str]] = []
        if t in _NEEDS_API_KEY and self.api_key is None:
            problems.append((("api_key",), f"required for type {t.value!r}"))
        if t in _NEEDS_BASE_URL and self.base_url is None:
            problems.append((("base_url",), f"required for type {t.value!r}"))
        if t in _NEEDS_API_VERSION and self.api_version is None:
            problems.append((("api_version",), f"required for type {t.value!r}"))
        if self.api_version is not None and t not in _TAKES_API_VERSION:
            problems.append((("api_version",), f"type {t.value!r} has no API version"))
        aws = ("aws_region", "aws_access_key_id", "aws_secret_access_key")
        if t is ProviderType.BEDROCK:
            if self.aws_region is None:
                problems.append((("aws_region",), "required for type 'bedrock'"))
            if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
                problems.append(
                    (
                        ("aws_secret_access_key",),
                        "aws_access_key_id and aws_secret_access_key "
                        "come together (or neither, to use the instance's role)",
                    )
                )
        else:
            problems.extend(
                ((name,), "only for type 'bedrock'") for name in aws if getattr(self, name)
            )
        if len(set(self.models)) != len(self.models):
            problems.append((("models",), "lists a model twice"))
        if problems:
            raise refuse(type(self).__name__, problems)
        return self

    def offers(self, model: str) -> bool:
        """Whether a deployment may name ``model`` (an empty `models` offers any)."""
        return not self.models or model in self.models


def aliases_using(router: RouterConfig, provider: str, model: str | None = None) -> list[str]:
    """Router aliases with a deployment on ``provider`` (and ``model``, if given)."""
    return sorted(
        alias
        for alias, spec in router.aliases.items()
        if any(d.provider == provider and model in (None, d.model) for d in spec.deployments)
    )


class ModelProviderConfigurationManager(ConfigurationManager[ModelProvider]):
    """Provider accounts, keyed by provider name: ``providers.get("openai-main")``.

    Writes first catch up with the change log, so the router rule below is checked
    against the newest router this instance can see. Two instances changing the router
    and a provider at the same moment can still both pass (the rule spans two documents);
    gateways therefore skip deployments whose provider is missing or disabled.
    """

    namespace = "model_provider"
    model = ModelProvider
    keyed = True

    def __init__(self, hub: ConfigHub) -> None:
        super().__init__(hub)
        # What `_prepare_rules` read for a write to an environment this hub does not hold.
        self._router_in: dict[str, RouterConfig | None] = {}

    def enabled(self) -> dict[str, ModelProvider]:
        """Enabled providers by name (memory only)."""
        return {name: p for name, p in self.items() if p.enabled}

    def validate_write(self, key: str, value: ModelProvider | None) -> None:
        if value is not None and not PROVIDER_NAME.match(key):
            raise ValidationFailed(
                self.namespace,
                key,
                [
                    FieldError(
                        "",
                        f"bad provider name {key!r}: use lower-case letters, digits, "
                        "'-' and single '_' (at most 63)",
                    )
                ],
                source="update",
            )
        router = self._router()
        if router is None:
            return
        errors: list[FieldError] = []
        if value is None or not value.enabled:
            users = aliases_using(router, key)
            if users:
                what = "delete" if value is None else "disable"
                where = "" if value is None else "enabled"
                errors.append(
                    FieldError(
                        where,
                        f"cannot {what} provider {key!r}: router aliases use it: "
                        f"{', '.join(users)}",
                        # Who may not read the router is not told its alias names.
                        concerns=_ROUTER,
                        withheld=FieldError(
                            where, f"cannot {what} provider {key!r}: the router uses it"
                        ),
                    )
                )
        elif value.models:
            deployed = {
                d.model
                for spec in router.aliases.values()
                for d in spec.deployments
                if d.provider == key
            }
            for model in sorted(deployed - set(value.models)):
                users = aliases_using(router, key, model)
                errors.append(
                    FieldError(
                        "models",
                        f"model {model!r} is deployed on provider {key!r} by router aliases: "
                        f"{', '.join(users)}",
                        concerns=_ROUTER,
                        withheld=FieldError(
                            "models",
                            f"model {model!r} is deployed on provider {key!r} by the router",
                        ),
                    )
                )
        if errors:
            raise ValidationFailed(self.namespace, key, errors, source="router rule")

    def _router(self) -> RouterConfig | None:
        # Not a `requires`: the router requires us. Checked only when it is loaded.
        from .router import RouterConfigurationManager

        elsewhere = self.rule_environment()
        if elsewhere is not None:  # a write to an environment this instance does not hold
            return self._router_in.get(elsewhere)
        try:
            return self.hub.manager(RouterConfigurationManager).current
        except NotFound:
            return None

    async def _prepare_rules(self, environment: str) -> None:
        from .router import RouterConfigurationManager

        try:
            router = self.hub.manager(RouterConfigurationManager)
        except NotFound:
            self._router_in = {}
            return
        self._router_in = {
            environment: (await router.resolve(environment=environment or None)).value
        }

    async def _write(self, key: str, build: Any, **options: Any) -> Any:
        await self.hub.catch_up()  # see the newest router before checking against it
        return await super()._write(key, build, **options)
