"""Dispatch settings: the targets cases go to, and how hard delivery tries."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, HttpUrl, model_validator

from detect.config_io import ConfigModel


class RetryPolicy(ConfigModel):
    base_s: float = Field(2.0, title="First back-off", description="Delay before the first retry; doubles per attempt.", gt=0)
    max_s: float = Field(600.0, title="Longest back-off", description="Cap of the delay between attempts (and of a platform's Retry-After).", gt=0)
    jitter: float = Field(0.5, title="Jitter", description="Fraction of each delay that is random (0 = none, 1 = full jitter).", ge=0, le=1)
    max_attempts: int | None = Field(
        None, title="Attempt limit", description="Park the entry after this many failed attempts (default: retry until delivered).", ge=1)


class BreakerPolicy(ConfigModel):
    failures: int = Field(5, title="Failures to open", description="Consecutive failed deliveries that open the circuit.", ge=1)
    cooldown_s: float = Field(30.0, title="Cool-down", description="Seconds the circuit stays open before one trial delivery.", gt=0)


PhonesSent = Literal["full", "masked", "none"]
#: What an adapter sends of the phone numbers read from a posting when its target sets no `phones`: cn-dcm's
#: platform is the city's own, whose staff chase the advertiser by those numbers (追呼), so it gets them whole; an
#: Open311 server often lists its requests to anyone (GET requests.json), so it gets them masked (139****5678).
PHONES_DEFAULT: dict[str, PhonesSent] = {"cn-dcm": "full", "open311": "masked"}


class TargetConfig(ConfigModel):
    """One dispatch system."""

    adapter: Literal["cn-dcm", "open311"] = Field(title="Adapter", description="Protocol: cn-dcm (数字城管 JSON) or open311 (GeoReport v2).")
    url: HttpUrl = Field(title="Base URL", description="cn-dcm: URL cases are POSTed to; open311: endpoint base (…/requests.json is appended).")
    timeout_s: float = Field(10.0, title="Timeout", description="Seconds per HTTP request (connect and read).", gt=0)
    token_env: str | None = Field(
        None, title="Token variable", description="Environment variable with the credential (cn-dcm: sent in `auth_header`; open311: the api_key).")
    auth_header: str = Field("Authorization", title="Auth header", description="cn-dcm: header carrying the token.")
    auth_scheme: str | None = Field("Bearer", title="Auth scheme", description="cn-dcm: prefix of the token in the header (none: the bare token).")
    city: str = Field("default", title="City code table", description="Which taxonomy city codes (大类/小类) this platform uses.", min_length=1)
    field_map: dict[str, str] = Field(
        default_factory=dict, title="Field names",
        description="cn-dcm: rename payload fields for this city's platform (our name -> theirs; see the JSON schema for ours).")
    extra_fields: dict[str, str | int | float | bool] = Field(
        default_factory=dict, title="Constant fields", description="cn-dcm: fields added to every payload (e.g. a region code).")
    status_map: dict[str, Literal["accepted", "rejected", "closed", "handled"]] = Field(
        default_factory=lambda: {"accepted": "accepted", "立案": "accepted", "rejected": "rejected", "作废": "rejected",
                                 "handled": "handled", "处理完成": "handled", "closed": "closed", "结案": "closed"},
        title="Status map", description="cn-dcm webhook status value -> case state (`handled` starts the re-check).")
    callback_url: HttpUrl | None = Field(
        None, title="Callback URL", description="cn-dcm: where the platform should POST status changes (our webhook), sent with each case.")
    webhook_secret_env: str | None = Field(
        None, title="Webhook secret variable",
        description="cn-dcm: environment variable with the HMAC secret webhook calls are signed with (X-Signature: sha256=<hex>).")
    webhook_timestamp_header: str | None = Field(
        None, title="Webhook timestamp header", min_length=1,
        description="cn-dcm, opt-in (the platform must agree): header with the call's unix time in seconds (e.g. X-Timestamp); "
        "the signature then covers `<timestamp>.<body>`, and a call without it or further than `webhook_max_age_s` from now "
        "is refused, so a captured call cannot be replayed later; within that window a call is taken once (a repeat is "
        "refused 409). Needs `webhook_secret_env`.")
    webhook_max_age_s: float = Field(
        300.0, title="Webhook maximum age", gt=0,
        description="cn-dcm, with `webhook_timestamp_header`: seconds a call's timestamp may be from now (either way).")
    success_codes: list[str] = Field(
        ["0", "200"], title="Success codes", min_length=1,
        description="cn-dcm: values of an answer's envelope `code` that mean done (compared as text: 0 and \"0\" alike), for a "
        "platform that answers HTTP 200 to everything; another code parks the case (5xx, 408, 429: retried). A `success` flag, "
        "when the answer has one, decides instead, and an answer that carries a task number is a delivery whatever its code.")
    phones: PhonesSent | None = Field(
        None, title="Phone numbers sent",
        description="What the platform is sent of the phone numbers read from a posting (the description, and cn-dcm's "
        "`phones`): full; masked as the logs write them (139****5678); none (the description says how many were "
        "withheld: 含电话号码 N 个). Default: full for cn-dcm (the city's own platform, whose staff act on them), "
        "masked for open311 (a GeoReport request list is often public).")
    jurisdiction_id: str | None = Field(None, title="Jurisdiction", description="open311: jurisdiction_id, if the server hosts several.")
    attachment_expiry_s: int = Field(7 * 24 * 3600, title="Attachment URL lifetime",
                                     description="Seconds the evidence URLs sent with a case stay valid.", gt=0, le=7 * 24 * 3600)
    verification_path: str = Field(
        "{ref}/verification", title="Verification path",
        description="cn-dcm: where re-check results of a task are POSTed, relative to `url` ({ref} = their task number).",
        pattern=r"\{ref\}")
    poll_interval_s: float = Field(300.0, title="Status poll interval", description="open311: seconds between status polls of open cases.", gt=0)
    description_max: int = Field(
        4000, title="Description length", ge=200,
        description="open311: the most characters of `description` the server keeps (GeoReport v2 servers commonly cap it at "
        "4,000; set lower for one that caps lower, or counts bytes). A longer text is cut ending in …（已截断 truncated） "
        "before `streetwatch case <case id>`, which stays whole and last: a server cutting it off would leave the look-up "
        "unable to find the request, and a case in doubt sent twice.")
    lookup: bool = Field(
        True, title="Look up before re-sending",
        description="Before re-sending a case whose earlier attempt may have reached them (timeout, dropped connection, 5xx, "
        "a killed dispatcher), ask whether they already have it and adopt their task number (cn-dcm: by our external id, "
        "see `lookup_url`; open311: GET requests.json searched for our case id). Off: exactly-once rests on their "
        "honouring Idempotency-Key.")
    lookup_url: str | None = Field(
        None, title="Look-up URL",
        description="cn-dcm: URL that finds a case by our external id, `{external_id}` replaced (URL-encoded); default: "
        "the case URL with `?externalId={external_id}` (the parameter named as `field_map` renames externalId).")

    @model_validator(mode="after")
    def _timestamp_is_signed(self) -> TargetConfig:
        if self.webhook_timestamp_header and not self.webhook_secret_env:
            raise ValueError("webhook_timestamp_header needs webhook_secret_env: an unsigned timestamp can be rewritten "
                             "by whoever replays the call")
        return self

    @property
    def phones_sent(self) -> PhonesSent:
        """`phones`, or its adapter's default (`PHONES_DEFAULT`) when the file sets none."""
        return self.phones or PHONES_DEFAULT[self.adapter]

    def secret(self, env: str | None) -> str | None:
        return os.environ.get(env) if env else None


class DispatchConfig(ConfigModel):
    targets: dict[str, TargetConfig] = Field(default_factory=dict, title="Targets",
                                             description="Dispatch systems by name (the name cases are queued for).")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, title="Retry", description="Back-off between attempts.")
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy, title="Circuit breaker", description="Pause a failing target.")
    batch: int = Field(20, title="Batch", description="Most deliveries per pass; each entry is claimed (leased) only when its turn comes.", ge=1)
    lease_s: float = Field(
        60.0, title="Lease",
        description="Seconds an entry is reserved for the dispatcher sending it, renewed as its request leaves; must exceed "
        "twice the longest target timeout (a look-up and a send).", gt=0)
    idle_s: float = Field(1.0, title="Idle wait", description="Longest sleep of `dispatch run` when nothing is due.", gt=0)

    def unset_webhook_secrets(self) -> list[str]:
        """A warning for each target whose `webhook_secret_env` names a variable not set here: the webhook wants its
        signature, so every status call of that platform, with a token or signed, is refused 503 until the service
        runs with it. `serve` logs these at start-up rather than at the platform's first call, hours later."""
        return [f"dispatch.targets.{name}.webhook_secret_env: ${target.webhook_secret_env} is not set, so every status call "
                f"to /api/v1/dispatch/{name}/webhook is refused (503) until `streetwatch serve` runs with it"
                for name, target in self.targets.items()
                if target.webhook_secret_env and not target.secret(target.webhook_secret_env)]

    @model_validator(mode="after")
    def _lease_covers_requests(self) -> DispatchConfig:
        for name, target in self.targets.items():
            if target.timeout_s * 2 >= self.lease_s:
                raise ValueError(f"lease_s ({self.lease_s}) must exceed twice targets.{name}.timeout_s ({target.timeout_s}): "
                                 "an entry could be claimed again while its request is still running")
        return self
