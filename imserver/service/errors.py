"""Business errors with their RFC 6120 stanza-error condition and a human text."""

from __future__ import annotations

from typing import Literal, get_args

Condition = Literal[
    "bad-request",
    "conflict",
    "feature-not-implemented",
    "forbidden",
    "internal-server-error",
    "item-not-found",
    "not-acceptable",
    "not-allowed",
    "policy-violation",
    "registration-required",
    "resource-constraint",
    "service-unavailable",
    "undefined-condition",
]
ErrorType = Literal["modify", "cancel", "auth", "wait"]

# RFC 6120 §8.3.3: the usual type of each condition we use.
DEFAULT_TYPES: dict[Condition, ErrorType] = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "policy-violation": "modify",
    "registration-required": "auth",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "undefined-condition": "cancel",
}


class ServiceError(Exception):
    """A request that fails; nothing it touched is written."""

    def __init__(self, condition: Condition, text: str, etype: ErrorType | None = None) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text
        self.etype = etype or DEFAULT_TYPES[condition]


def bad_request(text: str) -> ServiceError:
    return ServiceError("bad-request", text)


def forbidden(text: str) -> ServiceError:
    return ServiceError("forbidden", text)


def not_found(text: str) -> ServiceError:
    return ServiceError("item-not-found", text)


def conflict(text: str) -> ServiceError:
    return ServiceError("conflict", text)


def not_acceptable(text: str) -> ServiceError:
    return ServiceError("not-acceptable", text)


def registration_required(
    text: str = "you are not a member: join through a referrer first",
) -> ServiceError:
    return ServiceError("registration-required", text)


assert set(get_args(Condition)) == set(DEFAULT_TYPES)
