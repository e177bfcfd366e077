#!/usr/bin/env python3
"""Verifies a keystore audit export (`keyctl audit export`, JSON lines)
independently of the keystore, with the `cryptography` package: the hash
chain of every entry, each checkpoint's ECDSA P-256 signature by a trusted
key (or by a key a trusted one handed over to), that each checkpoint's head
is the entry it names, and that the last checkpoint covers the last entry.

Usage: verify_audit_export.py TRAIL.jsonl TRUSTED.pem
Prints "OK <entries> <checkpoints>" and exits 0, or "BAD <seq> <why>" and
exits 1.
"""
import hashlib
import json
import re
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

ENTRY_DOMAIN = b"keystore-audit-entry-v1"
CHECKPOINT_DOMAIN = "keystore-audit-checkpoint-v1"
GENESIS = bytes(32)


def framed(h, value):
    if value is None:
        h.update(b"\x00")
    else:
        h.update(b"\x01" + struct.pack(">Q", len(value)) + value)


def utf8(v):
    return None if v is None else v.encode("utf-8")


def entry_hash(e, prev):
    h = hashlib.sha256()
    h.update(ENTRY_DOMAIN)
    h.update(struct.pack(">Q", e["seq"]))
    for name in ("id", "at", "actor", "role", "event", "key_name"):
        framed(h, utf8(e[name]))
    version = e.get("key_version")
    framed(h, None if version is None else struct.pack(">I", version))
    framed(h, utf8(e.get("fingerprint")))
    framed(h, utf8(e["detail"]))
    framed(h, prev)
    return h.digest()


def fingerprint(key):
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def well_formed(c, store_id):
    """Every field in its one textual form (as the Rust verifier requires)."""
    fp = re.compile(r"^sha256:[0-9a-f]{64}$")
    counter_ok = (c.get("counter") is None) == (c.get("counter_value") is None) and (
        c.get("counter") is None
        or (c["counter"] != "-" and re.fullmatch(r"[\x20-\x7e]{1,64}", c["counter"]))
    )
    return (
        c["store_id"] == store_id
        and re.fullmatch(r"[0-9a-f]{32}", c["store_id"])
        and re.fullmatch(r"[0-9a-f]{64}", c["head_hash"])
        and fp.match(c["signer"])
        and (c.get("handover") is None or fp.match(c["handover"]))
        and counter_ok
        and isinstance(c["number"], int)
        and isinstance(c["seq"], int)
    )


def checkpoint_message(c):
    def opt(v):
        return "-" if v is None else str(v)

    lines = [
        CHECKPOINT_DOMAIN,
        "store: " + c["store_id"],
        "checkpoint: %d" % c["number"],
        "seq: %d" % c["seq"],
        "head: " + c["head_hash"],
        "at: " + c["at"],
        "reason: " + c["reason"],
        "signer: " + c["signer"],
        "handover: " + opt(c.get("handover")),
        "counter: " + opt(c.get("counter")),
        "counter-value: " + opt(c.get("counter_value")),
    ]
    return "".join(line + "\n" for line in lines).encode("utf-8")


def main(trail_path, trust_path):
    entries, signers, checkpoints, store_id = [], {}, [], None
    with open(trail_path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            if "seq" in obj:
                entries.append(obj)
            elif "audit_signer" in obj:
                s = obj["audit_signer"]
                signers[s["fingerprint"]] = s["public_key_pem"]
            elif "checkpoint" in obj:
                checkpoints.append(obj["checkpoint"])
            elif "store" in obj:
                store_id = obj["store"]["store_id"]
    with open(trust_path, "rb") as f:
        pem = f.read()
    trusted = {}
    for block in pem.split(b"-----END PUBLIC KEY-----"):
        if b"-----BEGIN PUBLIC KEY-----" in block:
            key = serialization.load_pem_public_key(block + b"-----END PUBLIC KEY-----\n")
            trusted[fingerprint(key)] = key

    hashes_by_seq = {0: GENESIS}
    prev = GENESIS
    for i, e in enumerate(entries, start=1):
        if e["seq"] != i:
            return "BAD %d missing" % i
        if bytes.fromhex(e["prev_hash"]) != prev:
            return "BAD %d unlinked" % i
        h = entry_hash(e, prev)
        if h.hex() != e["hash"]:
            return "BAD %d edited" % i
        hashes_by_seq[i] = h
        prev = h

    covered = 0
    for n, c in enumerate(checkpoints, start=1):
        if c["number"] != n or not well_formed(c, store_id):
            return "BAD %d checkpoint-out-of-place" % (covered + 1)
        key = trusted.get(c["signer"])
        if key is None:
            return "BAD %d untrusted-signer" % (covered + 1)
        try:
            key.verify(
                bytes.fromhex(c["signature"]),
                checkpoint_message(c),
                ec.ECDSA(hashes.SHA256()),
            )
        except InvalidSignature:
            return "BAD %d bad-signature" % (covered + 1)
        if c["seq"] < covered:
            return "BAD %d checkpoint-out-of-place" % (covered + 1)
        if c["seq"] not in hashes_by_seq:
            return "BAD %d truncated" % (len(entries) + 1)
        if hashes_by_seq[c["seq"]].hex() != c["head_hash"]:
            return "BAD %d rewritten" % (covered + 1)
        covered = c["seq"]
        if c.get("handover"):
            pem_text = signers.get(c["handover"])
            if pem_text is None:
                return "BAD %d handover-key-missing" % (covered + 1)
            nxt = serialization.load_pem_public_key(pem_text.encode())
            if fingerprint(nxt) != c["handover"]:
                return "BAD %d handover-key-mismatch" % (covered + 1)
            # The outgoing key signs nothing after its handover.
            del trusted[c["signer"]]
            trusted[fingerprint(nxt)] = nxt
    if not checkpoints:
        return "BAD 1 no-checkpoint"
    if covered < len(entries):
        return "BAD %d not-covered" % (covered + 1)
    return "OK %d %d" % (len(entries), len(checkpoints))


if __name__ == "__main__":
    verdict = main(sys.argv[1], sys.argv[2])
    print(verdict)
    sys.exit(0 if verdict.startswith("OK") else 1)
