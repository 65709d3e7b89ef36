"""The JSON shapes of the end-user routes: auth, the user's own data, KYC."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictStr

from depositd.api.schemas import _In
from depositd.db.end_users import Account, Submission
from depositd.domain.credentials import MAX_LENGTH
from depositd.services.kyc import Reviewed

MerchantField = Field(
    min_length=1, max_length=40, description="the merchant (mer_…) the user signs up with"
)
EmailField = Field(min_length=3, max_length=254)
PasswordField = Field(min_length=1, max_length=MAX_LENGTH * 4)


class RegisterIn(_In):
    merchant: StrictStr = MerchantField
    email: StrictStr = EmailField
    password: StrictStr = PasswordField


class ResendIn(_In):
    merchant: StrictStr = MerchantField
    email: StrictStr = EmailField


class EmailSentOut(BaseModel):
    email: str
    detail: str


class VerifyIn(_In):
    token: StrictStr = Field(min_length=1, max_length=200)


class LoginIn(_In):
    merchant: StrictStr = MerchantField
    email: StrictStr = EmailField
    password: StrictStr = PasswordField


class SessionOut(BaseModel):
    #: send as ``Authorization: Bearer <token>`` to /v1/me; shown once
    token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme, not a secret
    expires_at: datetime


class MeOut(BaseModel):
    id: str
    email: str
    email_verified: bool
    kyc_level: int
    #: the merchant's user this account is (its ``external_id`` is the account id)
    user: dict[str, str]
    created_at: datetime

    @classmethod
    def of(cls, account: Account) -> MeOut:
        return cls(
            id=account.id,
            email=account.email,
            email_verified=account.email_verified_at is not None,
            kyc_level=account.kyc_level,
            user={"id": account.user_id, "external_id": account.id},
            created_at=account.created_at,
        )


class DocumentType(StrEnum):
    PASSPORT = "passport"
    NATIONAL_ID = "national_id"
    DRIVING_LICENCE = "driving_licence"


class KycIn(_In):
    level: int = Field(ge=1, le=100, strict=True, description="the KYC level asked for")
    full_name: StrictStr = Field(min_length=1, max_length=200)
    date_of_birth: date
    country: StrictStr = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")
    document_type: DocumentType
    document_number: StrictStr = Field(min_length=1, max_length=64)
    address: StrictStr | None = Field(None, max_length=500)


class KycSubmissionOut(BaseModel):
    id: str
    level: int
    #: ``pending``, ``approved`` or ``rejected``
    status: str
    submitted_at: datetime
    decided_at: datetime | None
    granted_level: int | None
    #: why it was rejected
    reason: str | None

    @classmethod
    def of(cls, submission: Submission) -> KycSubmissionOut:
        return cls(
            id=submission.id,
            level=submission.level,
            status=submission.status,
            submitted_at=submission.submitted_at,
            decided_at=submission.decided_at,
            granted_level=submission.granted_level,
            reason=submission.reason,
        )


class KycStatusOut(BaseModel):
    kyc_level: int
    submissions: list[KycSubmissionOut]


class KycReviewOut(KycSubmissionOut):
    user: dict[str, str]
    #: the personal fields, opened for review
    fields: dict[str, Any]

    @classmethod
    def of_review(cls, reviewed: Reviewed) -> KycReviewOut:
        s = reviewed.submission
        return cls(
            **KycSubmissionOut.of(s).model_dump(),
            user={"external_id": s.external_id, "email": s.email},
            fields=reviewed.fields,
        )


class KycPage(BaseModel):
    data: list[KycReviewOut]
    next_cursor: str | None


class KycApproveIn(_In):
    level: int | None = Field(
        None, ge=1, le=100, strict=True, description="the level granted (default: as asked)"
    )


class KycRejectIn(_In):
    reason: StrictStr = Field(min_length=1, max_length=500, description="shown to the user")
