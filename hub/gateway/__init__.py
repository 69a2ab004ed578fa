"""The HTTPS gateway: systems that cannot speak AMQP exchange the same signed XML over HTTPS with client
certificates of the hub CA (issue 11; the design: ``hub gateway`` serves it, ``hub run --gateway`` beside the workers).

Public surface::

    GatewaySettings.for_state(state_dir, host=…, port=…)   where it listens, its server certificate, timeouts, limits
    create_app(settings, gateway) -> web.Application        endpoints + middleware; cleanup_ctx connects PostgreSQL
                                                            and RabbitMQ; state under the web.AppKey's SETTINGS,
                                                            GATEWAY_SETTINGS, STATE; the caller per request: IDENTITY
    start_gateway(settings, gateway) -> GatewayRunner       served over TLS (tls.server_ssl_context)
    run_gateway(settings, gateway)                          blocking, SIGTERM/SIGINT graceful (``hub gateway``)

Rooms: ``app`` (handlers, middleware, lifetime), ``direct`` (submissions examined in this process by the pipeline's
own batch code), ``mailbox`` (each system's queue: the inbox, and answers of submissions a worker finishes),
``identity`` (certificate → directory system, revocation), ``limits`` (rate, concurrency), ``status`` (codes →
HTTP statuses), ``openapi`` (the document at /openapi.json), ``tls``, ``config``, ``server`` (processes).
aiohttp is imported here and in ``monitoring/`` only.

Several gateway processes serve an installation only behind a load balancer with client affinity (HAProxy ``balance
source`` or ``stick-table``/``stick on src``; nginx ``hash $remote_addr consistent``): a system's inbox deliveries and
their delivery tags live in the gateway that took them (a tag names it: ``mailbox.TAG_PATTERN``), and a tag brought
to another gateway is answered 421 ``GATEWAY_TAG_ELSEWHERE``. A system takes part over HTTPS or over AMQP, not both:
the inbox is the system's queue, and a submission the hub finishes in a worker (after a transient failure, or with
``GatewaySettings.in_process=False``) is answered on that queue, where whoever consumes it gets the answer (a second
consumer — another gateway, the system's own AMQP client — could take the answer a POST waits for: that POST then
ends in 503 ``GATEWAY_TIMEOUT`` and the answer is an inbox item there).
"""

from hub.gateway.app import GATEWAY_SETTINGS, IDENTITY, SETTINGS, STATE, GatewayState, create_app, start_gateway
from hub.gateway.config import GatewaySettings
from hub.gateway.server import gateway_main, run_gateway

__all__ = [
    "GATEWAY_SETTINGS",
    "IDENTITY",
    "SETTINGS",
    "STATE",
    "GatewaySettings",
    "GatewayState",
    "create_app",
    "gateway_main",
    "run_gateway",
    "start_gateway",
]
