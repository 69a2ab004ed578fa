"""The operators' roles and what each may do (三员分立 plus the duty operator), as data: ``ROLES`` (the label of each
role in Chinese and English) and ``PERMISSIONS`` (which roles hold each permission). Pure: the pages, the CLI and
the tests read the same table; ``monitoring.auth.require`` enforces it.

No one acts on their own account: ``operators.manage`` is the administrator's, and never over themself
(``hub.store.operators`` refuses it with ``OPS_SELF_ACTION``).
"""

from __future__ import annotations

from typing import Final

__all__ = ["PERMISSIONS", "ROLES", "allowed", "permissions_of", "roles_with"]

#: role → (中文, English)
ROLES: Final[dict[str, tuple[str, str]]] = {
    "admin": ("系统管理员", "System administrator"),
    "security": ("安全保密管理员", "Security officer"),
    "auditor": ("安全审计员", "Auditor"),
    "duty": ("值班员", "Duty operator"),
}

#: permission → the roles that hold it
PERMISSIONS: Final[dict[str, frozenset[str]]] = {
    "view": frozenset(ROLES),
    "message.xml": frozenset({"security", "duty"}),
    "quarantine.decide": frozenset({"security"}),
    "dead.replay": frozenset({"duty", "admin"}),
    "alarm.clear": frozenset({"duty", "admin"}),
    "cert.revoke": frozenset({"security"}),
    "csr.approve": frozenset({"security"}),
    "operators.manage": frozenset({"admin"}),
    "audit.view": frozenset({"auditor"}),
}


def allowed(role: str, permission: str) -> bool:
    """Whether ``role`` holds ``permission`` (an unknown permission or role holds nothing)."""
    return role in PERMISSIONS.get(permission, frozenset())


def permissions_of(role: str) -> frozenset[str]:
    return frozenset(p for p, roles in PERMISSIONS.items() if role in roles)


def roles_with(permission: str) -> list[str]:
    """The roles holding ``permission``, in the order of ``ROLES`` (for "this needs …" messages)."""
    holders = PERMISSIONS.get(permission, frozenset())
    return [r for r in ROLES if r in holders]
