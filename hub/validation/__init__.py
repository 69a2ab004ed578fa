"""Schema registry: compiles schemas/ once; validates envelopes and bodies by service and version."""

from hub.validation.registry import SchemaRegistry, ServiceSchema, Violation

__all__ = ["SchemaRegistry", "ServiceSchema", "Violation"]
