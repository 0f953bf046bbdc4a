"""Runs in the lab's client namespace: a batch of HTTP(S) requests, JSON in (argv[1]) and out.

Each request: {"method", "url", "host", "sni"?, "ca"? (PEM file to verify against, with the
hostname checked against sni)}. Each answer: {"status", "headers" (lower-case names), "body",
"cert_cn"} or {"error"}; "timeout" (s, default 5). A fresh connection per request, as the conformance suite's client.
"""
import http.client
import json
import socket
import ssl
import sys
from urllib.parse import urlsplit


def one(req: dict) -> dict:
    u = urlsplit(req["url"])
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    try:
        if u.scheme == "https":
            ctx = ssl.create_default_context(cafile=req["ca"]) if req.get("ca") else ssl.create_default_context()
            if not req.get("ca"):
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            raw = socket.create_connection((u.hostname, u.port or 443), timeout=5)
            sock = ctx.wrap_socket(raw, server_hostname=req.get("sni") or req["host"])
            c = http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=5)
            c.sock = sock
        else:
            c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=req.get("timeout", 5))
        c.request(req.get("method", "GET"), target, body=req.get("body"),
                  headers={"Host": req["host"], "User-Agent": "Go-http-client/1.1"})
        r = c.getresponse()
        body = r.read().decode(errors="replace")
        cn = ""
        if u.scheme == "https":
            der = c.sock.getpeercert(binary_form=True)
            from cryptography import x509
            cert = x509.load_der_x509_certificate(der)
            cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        c.close()
        return {"status": r.status, "headers": {k.lower(): v for k, v in r.getheaders()}, "body": body,
                "version": r.version, "cert_cn": cn}
    except (OSError, ssl.SSLError, http.client.HTTPException) as e:
        return {"error": f"{type(e).__name__}: {e}"}


if __name__ == "__main__":
    print(json.dumps([one(r) for r in json.loads(sys.argv[1])]))
