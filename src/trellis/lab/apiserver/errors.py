"""metav1.Status errors, as the Kubernetes API returns them."""
from __future__ import annotations


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    res = f"{resource}.{group}" if group else resource
    return ApiError(404, "NotFound", f'{res} "{name}" not found',
                    {"name": name, "group": group, "kind": resource})


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    res = f"{resource}.{group}" if group else resource
    return ApiError(409, "AlreadyExists", f'{res} "{name}" already exists',
                    {"name": name, "group": group, "kind": resource})


def conflict(resource: str, name: str, group: str = "") -> ApiError:
    res = f"{resource}.{group}" if group else resource
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {res} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    {"name": name, "group": group, "kind": resource})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


class Invalid(ApiError):
    """422: each cause names the field at fault, like field.ErrorList."""

    def __init__(self, kind: str, name: str, causes: list[tuple[str, str, str]], group: str = "") -> None:
        # causes: (field, reason, message) with reason FieldValueInvalid/Required/...
        text = "; ".join(f"{f}: {m}" for f, _, m in causes)
        gk = f"{kind}.{group}" if group else kind
        super().__init__(422, "Invalid", f'{gk} "{name}" is invalid: {text}', {
            "name": name, "group": group, "kind": kind,
            "causes": [{"reason": r, "message": m, "field": f} for f, r, m in causes]})
