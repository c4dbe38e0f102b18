"""A child process for tests/ca/test_server_hostile.py: the CA endpoints served by the
production runner (forked workers) with an OCSP lookup that takes 2 seconds, so a signal
can arrive while a request is in flight. Prints ``<port> <OCSP request hex>`` once the
workers answer; exits as the runner does. With ``--slow-start`` each worker takes 3 seconds
to load the application (a slow store), so a signal can arrive before it answers."""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from revpki import issue

from smimekit.ca.ocsp import CertStatus, OCSPResponder, build_responder_certificate
from smimekit.keys.signer import LocalSigner
from smimekit.service.app import ServiceApp
from smimekit.service.ca_endpoints import CAEndpoints, ca_app
from smimekit.service.runner import ServerLimits, serve

LOOKUP_SECONDS = 2.0


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    root = issue("Slow Root", None, ca=True)
    ca = issue("Slow Issuing CA", root, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    responder_cert = build_responder_certificate(ca.cert, LocalSigner(ca.key), key.public_key(),
                                                 now=an_hour_ago)
    party = issue("slow-good", ca)

    def lookup(serial: int) -> CertStatus:
        time.sleep(LOOKUP_SECONDS)
        return CertStatus.good() if serial == party.cert.serial_number else CertStatus.unknown()

    responder = OCSPResponder(ca.cert, responder_cert, key, lookup)
    request = ocsp.OCSPRequestBuilder().add_certificate(party.cert, ca.cert, hashes.SHA256())
    request_der = request.build().public_bytes(serialization.Encoding.DER)

    slow_start = "--slow-start" in sys.argv[1:]

    def load() -> ServiceApp:
        if slow_start:
            time.sleep(3)
        return ca_app(CAEndpoints(lambda: b"", responder, {}, None))

    def ready(url: str) -> None:
        print(url.rsplit(":", 1)[1], request_der.hex(), flush=True)

    serve(load, "127.0.0.1", 0, ServerLimits(workers=2, shutdown_timeout=20), on_ready=ready)


if __name__ == "__main__":
    main()
