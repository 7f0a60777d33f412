"""What sr3's two local web apps (the study, sr3/study/server.py, and the demo, sr3/demo/app.py)
share: the response headers that lock a page to its own files, and the binding checks."""

from __future__ import annotations

import ipaddress
import socket

from .errors import UserError


def security_headers(img_src: str = "'self'") -> dict[str, str]:
    """Sent with every response.  The CSP forbids inline script and any third-party origin, so
    nothing but the app's own static files can run on or load into the page; ``img_src`` is the
    CSP img-src list (the demo adds ``blob:`` for the upload and the result)."""
    return {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
        "Content-Security-Policy": (f"default-src 'none'; script-src 'self'; style-src 'self'; img-src {img_src}; "
                                    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    }


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bindable(host: str, port: int) -> None:
    """Turn "address in use" into a one-line error before uvicorn logs and exits."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"--host {host}: cannot resolve ({e.strerror}); use an IP address such as 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise UserError(f"--port {port}: cannot listen on {host} ({e.strerror}); choose another --port") from None
