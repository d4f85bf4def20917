"""What every route needs: the control plane and who is asking."""

from fastapi import Request

from vpool.security.tokens import authenticate


def control_plane(request: Request):
    return request.app.state.cp


def caller(request: Request) -> str:
    cp = request.app.state.cp
    return authenticate(cp.store, request.headers.get("authorization"), request.app.state.token_cache)
