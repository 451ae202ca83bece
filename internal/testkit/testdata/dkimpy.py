#!/usr/bin/python3
# dkimpy.py: the dkimpy (python3-dkim) side of the interoperability tests.
# Run with /usr/bin/python3, where Debian's python3-dkim is installed.
# The message is read from stdin; nothing touches the real DNS.
#
#   dkimpy.py verify RECORDS_JSON
#       RECORDS_JSON maps DNS names ("sel._domainkey.dom", no trailing dot)
#       to TXT records. Prints one line per DKIM-Signature, top to bottom:
#       "pass", or "fail <reason>".
#   dkimpy.py sign OPTIONS_JSON
#       OPTIONS_JSON: {"selector", "domain", "key" (RSA: PKCS#1 PEM;
#       ed25519: base64 seed, as dknewkey writes it), "algorithm",
#       "identity", "canon" ("relaxed/simple"), "headers" (list),
#       "length" (bool), "header_only" (bool)}. Prints the signed message,
#       or only the DKIM-Signature field with "header_only".
#   dkimpy.py check
#       Exits 0 when dkim and nacl (for ed25519) import.
import json
import logging
import sys
import types


def no_dns(name, timeout=5):
    raise RuntimeError("dkimpy.py must not query the real DNS")


# dkimpy resolves keys through dkim.dnsplug, which imports dnspython (and
# with it httpx and requests: most of a second). A stand-in module makes
# sure no key ever comes from the real DNS, and makes the import fast.
sys.modules["dkim.dnsplug"] = types.SimpleNamespace(get_txt=no_dns)

import dkim  # noqa: E402


class Last(logging.Handler):
    """Keeps the last error dkimpy logged: verify() returns False without
    saying why when the key cannot be used, and logs the reason instead."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.msg = None

    def emit(self, record):
        self.msg = record.getMessage()


def verify(records):
    def dnsfunc(name, timeout=5):
        # dkimpy asks for b"sel._domainkey.dom." and wants the record bytes;
        # None means "no record" (dkimpy reports a missing public key).
        rec = records.get(name.decode().rstrip(".").lower())
        return rec.encode() if rec is not None else None

    msg = sys.stdin.buffer.read()
    n = sum(1 for k, _ in dkim.DKIM(msg).headers if k.lower() == b"dkim-signature")
    for i in range(n):
        last = Last()
        log = logging.getLogger("dkimpy%d" % i)
        log.addHandler(last)
        log.propagate = False
        d = dkim.DKIM(msg, logger=log)
        try:
            ok = d.verify(idx=i, dnsfunc=dnsfunc)
            reason = last.msg or "signature did not verify"
        except dkim.DKIMException as e:
            ok, reason = False, "%s: %s" % (type(e).__name__, e)
        print("pass" if ok else "fail " + " ".join(reason.split()))


def sign(o):
    msg = sys.stdin.buffer.read()
    b = lambda s: s.encode() if s is not None else None
    sig = dkim.sign(
        msg,
        selector=b(o["selector"]),
        domain=b(o["domain"]),
        privkey=b(o["key"]),
        identity=b(o.get("identity") or None),
        canonicalize=tuple(b(c) for c in (o.get("canon") or "relaxed/simple").split("/")),
        signature_algorithm=b(o.get("algorithm", "rsa-sha256")),
        include_headers=[b(h) for h in o["headers"]] if o.get("headers") else None,
        length=bool(o.get("length")),
    )
    # dkim.sign returns the field, folded with CRLF and ending in CRLF; the
    # signed message is that field on top of the message as it was given.
    sys.stdout.buffer.write(sig if o.get("header_only") else sig + msg)


def main():
    cmd = sys.argv[1]
    if cmd == "check":
        import nacl.signing  # noqa: F401 (ed25519 needs PyNaCl)
    elif cmd == "verify":
        verify(json.loads(sys.argv[2]))
    elif cmd == "sign":
        sign(json.loads(sys.argv[2]))
    else:
        sys.exit("unknown command " + cmd)


main()
