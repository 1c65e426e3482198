"""The diagnostics schema. Importing this package registers every table on ``Base.metadata``."""

from vetgateway.model import ReportStatus, ResultStatus, Sex
from vetgateway.store.models.access import ApiToken, AuditEntry, Role
from vetgateway.store.models.alerts import (
    AcknowledgementVia,
    Alert,
    AlertAcknowledgement,
    AlertKind,
    AlertState,
    Page,
    PageChannel,
    PageStatus,
)
from vetgateway.store.models.base import Base
from vetgateway.store.models.catalogue import (
    CatalogueCategory,
    CatalogueTest,
    CodeMapping,
    ReferenceInterval,
    ValueType,
)
from vetgateway.store.models.clinics import (
    Clinic,
    ContactKind,
    OnCallEntry,
    OnCallLevel,
    Veterinarian,
    VeterinarianContact,
)
from vetgateway.store.models.devices import Device, DeviceKind, DeviceProtocol
from vetgateway.store.models.imaging import ImagingInstance, ImagingSeries, ImagingStudy
from vetgateway.store.models.messages import InboundMessage, MessageStatus
from vetgateway.store.models.orders import DiagnosticOrder, OrderItem, OrderItemStatus, OrderStatus
from vetgateway.store.models.patients import PatientIdentifiers
from vetgateway.store.models.qc import (
    QcDecision,
    QcLot,
    QcMaterial,
    QcResult,
    QcReview,
    QcRun,
    QcStatus,
    QcTarget,
)
from vetgateway.store.models.reports import (
    DiagnosticReport,
    Interpretation,
    LabResult,
    MappingStatus,
    MatchStatus,
    ReportAttachment,
)

__all__ = [
    "AcknowledgementVia",
    "Alert",
    "AlertAcknowledgement",
    "AlertKind",
    "AlertState",
    "ApiToken",
    "AuditEntry",
    "Base",
    "CatalogueCategory",
    "CatalogueTest",
    "Clinic",
    "CodeMapping",
    "ContactKind",
    "Device",
    "DeviceKind",
    "DeviceProtocol",
    "DiagnosticOrder",
    "DiagnosticReport",
    "ImagingInstance",
    "ImagingSeries",
    "ImagingStudy",
    "InboundMessage",
    "Interpretation",
    "LabResult",
    "MappingStatus",
    "MatchStatus",
    "MessageStatus",
    "OnCallEntry",
    "OnCallLevel",
    "OrderItem",
    "OrderItemStatus",
    "OrderStatus",
    "Page",
    "PageChannel",
    "PageStatus",
    "PatientIdentifiers",
    "QcDecision",
    "QcLot",
    "QcMaterial",
    "QcResult",
    "QcReview",
    "QcRun",
    "QcStatus",
    "QcTarget",
    "ReferenceInterval",
    "ReportAttachment",
    "ReportStatus",
    "ResultStatus",
    "Role",
    "Sex",
    "ValueType",
    "Veterinarian",
    "VeterinarianContact",
]
