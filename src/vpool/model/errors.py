"""Errors that cross layers and carry a sentence a person understands.

Every adapter maps them the same way (API: problem+json with `status`; CLI: one line and a
non-zero exit), so services raise these and never think about HTTP.
"""


class VpoolError(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class Invalid(VpoolError):
    status = 422
    title = "Invalid request"


class NotFound(VpoolError):
    status = 404
    title = "Not found"


class Conflict(VpoolError):
    status = 409
    title = "Conflict"


class NoCapacity(Conflict):
    title = "No host has room"


class Unauthorized(VpoolError):
    status = 401
    title = "Unauthorized"


class Unavailable(VpoolError):
    status = 503
    title = "Service unavailable"


class HypervisorError(VpoolError):
    status = 502
    title = "Hypervisor error"
