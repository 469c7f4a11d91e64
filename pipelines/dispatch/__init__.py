"""Delivery of queued cases to dispatch systems (cn-dcm JSON, Open311 GeoReport v2), status feedback, simulator."""

from pipelines.dispatch.adapters import CnDcmAdapter, Delivery, Open311Adapter, Permanent, Transient
from pipelines.dispatch.config import BreakerPolicy, DispatchConfig, RetryPolicy, TargetConfig
from pipelines.dispatch.dispatcher import CircuitBreaker, Dispatcher, PassStats, apply_status
from pipelines.dispatch.webhook import SeenCalls, WebhookError, WebhookResult, handle_cn_dcm_webhook

__all__ = [
    "BreakerPolicy", "CircuitBreaker", "CnDcmAdapter", "Delivery", "DispatchConfig", "Dispatcher", "Open311Adapter",
    "PassStats", "Permanent", "RetryPolicy", "SeenCalls", "TargetConfig", "Transient", "WebhookError", "WebhookResult",
    "apply_status", "handle_cn_dcm_webhook",
]
