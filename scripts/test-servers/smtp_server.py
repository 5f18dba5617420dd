#!/usr/bin/env python3
"""Test SMTP server for ixp integration tests (aiosmtpd).

Every accepted message is written to MAILDIR as <stamp>-<n>.eml (the raw DATA
bytes as received) plus <stamp>-<n>.json beside it (envelope: mail_from,
rcpt_tos, the AUTH login if the client authenticated). Files are written to a
temporary name and renamed, so a reader never sees a partial message.

AUTH PLAIN and AUTH LOGIN are offered over plain text (no TLS). By default
AUTH is optional; --require-auth makes MAIL FROM fail with 530 until the client
has logged in. Only the configured username/password is accepted (535 otherwise).

Options (env var in brackets):
  --host [IXP_SMTP_HOST, 127.0.0.1]   --port [IXP_SMTP_PORT, 2525]
  --maildir [IXP_SMTP_MAILDIR, required]
  --user [IXP_SMTP_USER, ixp]          --password [IXP_SMTP_PASSWORD, ixp-secret]
  --require-auth [IXP_SMTP_REQUIRE_AUTH=1]
"""
import argparse
import itertools
import json
import os
import signal
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

_counter = itertools.count(1)


class MaildirHandler:
    def __init__(self, maildir):
        self.maildir = maildir

    async def handle_DATA(self, server, session, envelope):
        n = next(_counter)
        base = os.path.join(self.maildir, "%d-%06d" % (time.time_ns(), n))
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "auth_login": (session.auth_data.login.decode("utf-8", "replace")
                           if isinstance(session.auth_data, LoginPassword) else None),
            "peer": list(session.peer) if session.peer else None,
        }
        for ext, data in ((".json", json.dumps(meta).encode()), (".eml", envelope.original_content)):
            tmp = base + ext + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, base + ext)  # .json lands first, .eml last: an .eml always has its .json
        return "250 Message accepted for delivery"


class Authenticator:
    def __init__(self, user, password):
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        if (mechanism in ("LOGIN", "PLAIN") and isinstance(auth_data, LoginPassword)
                and auth_data.login == self.user and auth_data.password == self.password):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)


def main():
    env = os.environ.get
    p = argparse.ArgumentParser(description="ixp test SMTP server (aiosmtpd)")
    p.add_argument("--host", default=env("IXP_SMTP_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("IXP_SMTP_PORT", "2525")))
    p.add_argument("--maildir", default=env("IXP_SMTP_MAILDIR"))
    p.add_argument("--user", default=env("IXP_SMTP_USER", "ixp"))
    p.add_argument("--password", default=env("IXP_SMTP_PASSWORD", "ixp-secret"))
    p.add_argument("--require-auth", action="store_true",
                   default=env("IXP_SMTP_REQUIRE_AUTH", "") not in ("", "0"))
    a = p.parse_args()
    if not a.maildir:
        p.error("--maildir (or IXP_SMTP_MAILDIR) is required")
    os.makedirs(a.maildir, exist_ok=True)

    controller = Controller(
        MaildirHandler(os.path.abspath(a.maildir)),
        hostname=a.host,
        port=a.port,
        authenticator=Authenticator(a.user, a.password),
        auth_required=a.require_auth,
        auth_require_tls=False,
    )
    controller.start()
    print("smtp listening on %s:%d maildir=%s require_auth=%s" % (a.host, a.port, a.maildir, a.require_auth), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
