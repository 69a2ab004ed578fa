"""The hub's errors. Every error has a stable ``code`` (what programs match on), a Chinese ``title``
(what an operator reads first) and an English sentence (``str(err)``) that says what was wrong.

Third-party exceptions (lxml, signxml, cryptography, aio-pika, asyncpg) are translated into these at the
edge of the module that calls the library; none of them reaches the pipeline, the CLI or an adapter.

The whole tree::

    HubError
    ├── EnvelopeError                  the bytes are not a safe, well-formed envelope      (permanent)
    │   ├── UnsafeXml                  DOCTYPE/entities, encoding, size, depth, duplicate ids
    │   └── SchemaViolation            envelope or body does not match its XSD; unknown service/version
    ├── TrustError                     the signature or the signer cannot be trusted       (permanent)
    │   ├── SignatureInvalid           profile, algorithm, transform, digest or value check failed
    │   ├── CertificateUntrusted       not issued by the hub CA, expired, wrong usage, wrong signer
    │   └── CertificateRevoked         revoked, or no fresh CRL to prove otherwise (fail closed)
    ├── MessageRejected                signed and valid, but not acceptable now             (permanent)
    │                                  (expired, dated in the future, duplicate)
    ├── RoutingError                   the route table or the gate refuses it               (permanent)
    │   ├── NoRoute                    unknown recipient or group, no route for the service
    │   ├── NotAllowed                 the sender may not send this service to that recipient
    │   └── ClassificationBlocked      密级 exceeds a recipient's zone ceiling, or quarantined
    ├── DeliveryError                  the broker or the database is unavailable            (transient: retried)
    │   ├── BrokerUnavailable
    │   └── StoreUnavailable
    └── ConfigError                    settings, directory, route or key files are wrong    (operator must fix)

Only ``DeliveryError`` is ``transient``; everything else is a final answer to the sender.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CODES",
    "BrokerUnavailable",
    "CertificateRevoked",
    "CertificateUntrusted",
    "ClassificationBlocked",
    "ConfigError",
    "DeliveryError",
    "EnvelopeError",
    "HubError",
    "MessageRejected",
    "NoRoute",
    "NotAllowed",
    "RoutingError",
    "SchemaViolation",
    "SignatureInvalid",
    "StoreUnavailable",
    "TrustError",
    "UnsafeXml",
    "title_of",
]

#: Every stable error code with its Chinese title. Codes are part of the public contract (they travel in
#: signed ``hub.error`` messages); never rename one, only add.
CODES: dict[str, str] = {
    # intake (bytes → tree)
    "ENV_EMPTY": "报文为空",
    "ENV_TOO_LARGE": "报文超过大小上限",
    "ENV_ENCODING": "报文编码不是 UTF-8",
    "ENV_DOCTYPE": "报文含 DOCTYPE 或实体声明",
    "ENV_MALFORMED": "报文不是格式良好的 XML",
    "ENV_TOO_DEEP": "报文嵌套层级过深",
    "ENV_LIMIT": "报文超过解析资源限制",
    "ENV_DUPLICATE_ID": "报文含重复的标识属性",
    "ENV_NOT_ENVELOPE": "根元素不是报文信封",
    "ENV_PI": "报文含处理指令",
    "ENV_NAMESPACES": "报文命名空间声明过多",
    # validation
    "SCHEMA_ELEMENT": "元素缺失、多余或顺序错误",
    "SCHEMA_ATTRIBUTE": "属性缺失或不允许",
    "SCHEMA_VALUE": "字段取值不合规",
    "SCHEMA_VIOLATION": "不符合报文模式",
    "SCHEMA_UNKNOWN_SERVICE": "未知的报文类型",
    "SCHEMA_UNKNOWN_VERSION": "报文类型不支持该版本",
    "SCHEMA_BODY_MISMATCH": "报文体与声明的报文类型不符",
    "SCHEMA_AGENCY_CODE": "统一社会信用代码校验码错误",
    # trust
    "SIG_MISSING": "报文未签名",
    "SIG_PROFILE": "签名结构不符合枢纽签名规范",
    "SIG_ALGORITHM": "签名算法不在允许列表",
    "SIG_TRANSFORM": "签名变换不在允许列表",
    "SIG_DIGEST": "摘要不符：报文被篡改",
    "SIG_VALUE": "签名值校验失败",
    "SIG_KEY_POLICY": "密钥类型或长度不符合要求",
    "CERT_UNTRUSTED": "证书不是枢纽 CA 签发",
    "CERT_EXPIRED": "证书已过期或尚未生效",
    "CERT_USAGE": "证书用途不允许签名",
    "CERT_REVOKED": "证书已吊销",
    "CERT_CRL_UNAVAILABLE": "无有效的证书吊销列表",
    "CERT_SIGNER_MISMATCH": "签名证书与发送方不符",
    "CERT_NOT_REGISTERED": "证书不是目录为该系统登记的证书（cert-sha256）",
    # deliveries (hub.trust.delivery): the hub's signature and the originating system's, side by side
    "SIG_ORIGIN_MISSING": "投递报文缺少原发系统签名",
    "SIG_ORIGIN_INVALID": "原发系统签名与报文内容不符",
    # message acceptance
    "MSG_EXPIRED": "报文已过期",
    "MSG_FUTURE": "报文时间超前",
    "MSG_DUPLICATE": "重复报文",
    "MSG_COST_EXCEEDED": "报文处理开销超过单条上限，已转人工处理",
    # routing and the classification gate
    "ROUTE_UNKNOWN_RECIPIENT": "收件机构或群组不存在",
    "ROUTE_NO_ROUTE": "该报文类型没有路由",
    "ROUTE_NOT_ALLOWED": "无权向该收件方发送此类报文",
    "GATE_CLASSIFICATION": "密级超过收件方网络区域上限",
    "GATE_QUARANTINED": "疑似涉密内容，已隔离待审",
    "GATE_REJECTED": "隔离报文经审核驳回",
    "ROUTE_TTL_EXCEEDED": "报文有效期超过该类报文的上限",
    "REFUSAL_UNRELATED": "拒收通知所指报文未投递给拒收系统，或收件方不是该报文的原发送系统",
    # directory and route files (hub directory load, hub routes check)
    "CONFIG_MALFORMED": "配置文件不是格式良好的安全 XML",
    "CONFIG_SCHEMA": "配置文件不符合其模式",
    "DIR_DUPLICATE": "目录中机构代码、系统标识或群组名称重复",
    "DIR_UNKNOWN_REF": "目录引用了不存在的机构、系统或群组",
    "DIR_CYCLE": "上级机构链或群组成员关系成环",
    "DIR_CEILING": "系统密级上限超过其网络区域上限",
    "DIR_ADDRESS": "系统的网关接入地址不是合法的 IP 地址或网段",
    "DIR_INCONSISTENT": "目录数据前后矛盾",
    "ROUTES_DUPLICATE": "路由名称重复",
    "ROUTES_UNKNOWN_REF": "路由引用了目录中不存在的机构、系统或群组",
    "ROUTES_POLICY": "路由策略不合理",
    "ROUTES_UNREACHABLE": "路由的收件方中没有系统接收该报文类型",
    "ROUTES_NOT_ENACTED": "路由声明了枢纽不执行的策略",
    # delivery and operations
    "DELIVERY_BROKER": "消息中间件不可用",
    "DELIVERY_STORE": "数据库不可用",
    "DELIVERY_EXPIRED": "报文在有效期内未被收件方接收",
    "DELIVERY_LATER_UNATTRIBUTED": "延后投递的报文不能确定是哪个系统延后的，已转入死信队列",
    "CONFIG": "配置错误",
    "IO_READ": "无法读取文件",
    "INTERNAL": "枢纽内部错误",
    # transport (RabbitMQ) and store (PostgreSQL)
    "DELIVERY_UNROUTABLE": "消息无法路由到任何队列",
    "DELIVERY_NACKED": "消息中间件拒收消息",
    "AMQP_ACCESS_REFUSED": "消息中间件拒绝访问",
    "AMQP_NOT_FOUND": "消息中间件中不存在该队列或交换器",
    "AMQP_PRECONDITION": "队列或交换器已以不同参数存在",
    "AMQP_MANAGEMENT": "消息中间件管理接口出错",
    "QUARANTINE_NOT_FOUND": "隔离区中没有该报文",
    "QUARANTINE_DECIDED": "该隔离报文已审核",
    # dead letters (hub dead, the ops page): what a replay refuses
    "DEAD_NOT_FOUND": "死信中没有该条目",
    "DEAD_ALREADY_REPLAYED": "该死信已重放",
    "DEAD_NOT_REPLAYABLE": "该死信无法判定原去向或未通过核验，不能重放",
    # trust lifecycle (issue 13): one installation per store, missing database or register, backups
    "STORE_FOREIGN_INSTALLATION": "数据库属于另一套枢纽安装",
    "STORE_NO_DATABASE": "数据库不存在",
    "STORE_NO_CA": "数据库中没有本证书中心的登记",
    "BACKUP_FAILED": "备份或恢复失败",
    "PKI_REVOKE_CURRENT": "不能吊销枢纽正在使用的证书",
    # the HTTPS gateway (hub/gateway): refusals before a message reaches the hub's one processor
    "GATEWAY_NO_CERTIFICATE": "未提供客户端证书",
    "GATEWAY_UNKNOWN_SYSTEM": "客户端证书对应的系统不在目录中",
    "GATEWAY_ADDRESS_REFUSED": "该系统不允许从此地址接入网关（目录的 gateway-addresses）",
    "GATEWAY_RATE_LIMITED": "请求频率超过该系统的上限",
    "GATEWAY_CONCURRENCY": "并发请求数超过该系统的上限",
    "GATEWAY_TIMEOUT": "枢纽未在时限内答复",
    "GATEWAY_READ_TIMEOUT": "读取请求体超时",
    "GATEWAY_MEDIA_TYPE": "请求内容类型不符（提交报文用 application/xml，拒收投递用 application/json）",
    "GATEWAY_BAD_REQUEST": "请求参数不合规",
    "GATEWAY_NOT_FOUND": "请求的资源不存在",
    "GATEWAY_TAG_ELSEWHERE": "该投递标签由另一个网关（或本网关重启前）发出，此处未确认"
    "（负载均衡须按来源地址把客户端固定到同一网关）",
    "GATEWAY_METHOD": "该资源不支持此请求方法",
    "GATEWAY_UNAVAILABLE": "网关的审验进程暂不可用，请稍后重发",
    "GATEWAY_LINK_CONFLICT": "该系统已通过 AMQP 接收其队列，不能同时经 HTTPS 网关接入",
    # GET /ready (hub/gateway/readiness.py): why a gateway cannot serve now, for the load balancer and its operator
    "GATEWAY_NOT_READY": "本网关暂不能受理请求（负载均衡应转往其他网关）",
    "GATEWAY_READY_BROKER": "网关与 RabbitMQ 的连接中断",
    "GATEWAY_READY_STORE": "网关连不上 PostgreSQL",
    "GATEWAY_READY_EXAMINERS": "网关没有运行中的审验进程",
    "GATEWAY_READY_CRL": "枢纽 CA 的吊销列表缺失或过期，无法核验客户端证书",
    "GATEWAY_READY_STOPPING": "网关正在停止",
    # the gateway's TLS handshakes that failed (hub/gateway/tls.py): no HTTP answer, counted for the people on duty
    "TLS_CERT_UNTRUSTED": "TLS 握手被拒：客户端证书不是枢纽 CA 签发的",
    "TLS_CERT_INVALID": "TLS 握手被拒：客户端证书未通过校验",
    "TLS_CLIENT_DISTRUSTS_HUB": "TLS 握手失败：客户端不接受网关的服务器证书（未装枢纽根证书或主机名不符）",
    "TLS_PLAIN_HTTP": "TLS 握手失败：客户端用明文 HTTP 访问了网关的 HTTPS 端口",
    "TLS_PROTOCOL": "TLS 握手失败：客户端的 TLS 版本或密码套件不被接受（需 TLS 1.2 及以上）",
    "TLS_HANDSHAKE_FAILED": "TLS 握手失败",
    "TLS_HANDSHAKE_TIMEOUT": "TLS 握手超时：客户端在限定时间内没有完成握手",
    "TLS_PROXY_HEADER": "负载均衡的连接没有有效的 PROXY 协议头，连接被关闭（见 HUB_GATEWAY_PROXY_FROM）",
    "TLS_HANDSHAKES_FULL": "同时进行的 TLS 握手已达网关上限，新连接被立即关闭（疑似连接洪泛）",
    # documents (hub/processes/documents.py): receipts, feedback deadlines, document status
    "DOC_RECEIPT_AGENCY_MISMATCH": "公文回执的回执单位与签名发送方不一致，未采纳",
    "DOC_RECEIPT_NOT_DELIVERED": "公文回执所指的公文未经枢纽送达该单位，未采纳",
    "DOC_FEEDBACK_DUE_INVALID": "公文的反馈期限早于发文时间，未跟踪期限",
    "DOC_OVERDUE": "公文超过反馈期限仍有收文单位未办结",
    "DOC_NOT_FOUND": "枢纽没有该公文的记录",
    "DOC_BAD_ID": "公文报文标识应为 UUID",
    "DOC_DEADLINES_INVALID": "公文反馈期限配置文件无法使用",
    # meetings (hub/processes/meetings.py): the hub's register of rooms and terminals, attendance confirmations
    "MEETING_SLOT_TAKEN": "会议室或视频终端在该时段已被预约",
    "MEETING_ORGANIZER_MISMATCH": "会议预约的主办单位与签名发送方不一致",
    "MEETING_CONFIRM_MISMATCH": "参会回执的回执单位与签名发送方不一致",
    "MEETING_CONFIRM_UNKNOWN": "参会回执所指的会议通知未经枢纽送达该单位",
    "MEETING_NOT_FOUND": "枢纽没有该会议预约的记录",
    # approvals (hub/processes/approvals.py): cases, statutory deadlines, supervision (督办)
    "APPROVAL_CASE_UNKNOWN": "审批进度或决定所指的案件未经枢纽受理登记",
    "APPROVAL_SENDER_MISMATCH": "审批进度或决定并非由受理该申请的审批系统发出",
    "APPROVAL_TRANSITION_INVALID": "审批进度或决定与案件当前状态不符，未采纳",
    "APPROVAL_CASE_DUPLICATE": "同一案件编号的申请重复提交",
    "APPROVAL_DEADLINE_MISMATCH": "申请所报法定办结期限与枢纽按工作日历计算的不一致",
    "APPROVAL_CALENDAR_GAP": "节假日日历未覆盖该案件的办理期间",
    "APPROVAL_CALENDAR_INVALID": "节假日日历无法使用",
    "APPROVAL_NO_SUPERVISOR": "找不到接收督办的责任单位或督办单位",
    "APPROVAL_OVERDUE": "审批案件超过法定办结期限",
    "APPROVAL_NOT_FOUND": "枢纽没有该审批案件的记录",
    "APPROVAL_BAD_DATE": "日期格式应为 YYYY-MM-DD",
    # emergencies (hub/processes/emergencies.py) and the emergency lane (hub/pipeline/processor.py)
    "LANE_NOT_ENTITLED": "该报文无权使用应急通道，请改走普通通道",
    "EMERGENCY_ACK_MISMATCH": "应急签收的签收单位与签名发送方不一致",
    "EMERGENCY_ACK_UNKNOWN": "应急签收所指的预警未经枢纽送达该单位",
    "EMERGENCY_ACK_LATE": "应急预警超时未签收，已重发并通报上级单位",
    "EMERGENCY_UPDATE_MISMATCH": "应急续报并非由原预警发出单位报送",
    "EMERGENCY_PLAN_INVALID": "应急预警分发预案无法使用",
    "EMERGENCY_NO_RECIPIENT": "找不到预案要求的接收单位",
    "EMERGENCY_NOT_FOUND": "枢纽没有该应急预警的记录",
}


def title_of(code: str) -> str:
    """The Chinese title of an error code (the code itself when unknown)."""
    return CODES.get(code, code)


class HubError(Exception):
    """Base of every error the hub raises on purpose.

    ``code`` is stable; ``detail`` is one English sentence for the sender or operator (never payload
    content, keys or parser internals that could echo file contents); ``line`` is the 1-based line in the
    input when known; ``path`` is the element path when known.
    """

    default_code: ClassVar[str] = "INTERNAL"
    transient: ClassVar[bool] = False

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        line: int | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code or self.default_code
        if self.code not in CODES:
            raise ValueError(f"unregistered error code {self.code!r}")
        self.detail = detail
        self.line = line
        self.path = path

    @property
    def title(self) -> str:
        return title_of(self.code)

    def describe(self) -> str:
        """``CODE: 标题 — detail`` (one line, for logs, CLI output and hub.error reasons)."""
        return f"{self.code}: {self.title} — {self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r}, line={self.line!r})"


class EnvelopeError(HubError):
    default_code = "ENV_MALFORMED"


class UnsafeXml(EnvelopeError):
    default_code = "ENV_MALFORMED"


class SchemaViolation(EnvelopeError):
    default_code = "SCHEMA_VIOLATION"


class TrustError(HubError):
    default_code = "SIG_VALUE"


class SignatureInvalid(TrustError):
    default_code = "SIG_VALUE"


class CertificateUntrusted(TrustError):
    default_code = "CERT_UNTRUSTED"


class CertificateRevoked(TrustError):
    default_code = "CERT_REVOKED"


class MessageRejected(HubError):
    default_code = "MSG_EXPIRED"


class RoutingError(HubError):
    default_code = "ROUTE_NO_ROUTE"


class NoRoute(RoutingError):
    default_code = "ROUTE_NO_ROUTE"


class NotAllowed(RoutingError):
    default_code = "ROUTE_NOT_ALLOWED"


class ClassificationBlocked(RoutingError):
    default_code = "GATE_CLASSIFICATION"


class DeliveryError(HubError):
    default_code = "DELIVERY_BROKER"
    transient = True


class BrokerUnavailable(DeliveryError):
    default_code = "DELIVERY_BROKER"


class StoreUnavailable(DeliveryError):
    default_code = "DELIVERY_STORE"


class ConfigError(HubError):
    default_code = "CONFIG"


class CheckpointRefused(Exception):
    """Raised by an evidence checkpoint verifier (``hub.trust.evidence``) when it refuses for a reason other than a
    wrong signature: the sentence (e.g. "its certificate … is unknown") goes into the problem an auditor reads
    (``hub.store.evidence.verify_chain``). Here, so that neither the trust package nor the store imports the other."""
