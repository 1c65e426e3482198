"""The diagnostics schema. Importing this package registers every table on ``Base.metadata``."""

from vetgateway.store.models.access import ApiToken, AuditEntry, Role
from vetgateway.store.models.base import Base
from vetgateway.store.models.messages import InboundMessage, MessageStatus

__all__ = ["ApiToken", "AuditEntry", "Base", "InboundMessage", "MessageStatus", "Role"]
