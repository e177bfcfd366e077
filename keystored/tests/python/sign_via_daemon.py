#!/usr/bin/env python3
"""A keystored client in Python: proves keystore.v1 is usable without Rust.

Uses only grpcio and the stubs grpcio-tools generates from
proto/keystore/v1/keystore.proto:

    python -m grpc_tools.protoc -I proto --python_out=STUBS \
        --grpc_python_out=STUBS proto/keystore/v1/keystore.proto

Usage:

    sign_via_daemon.py SOCKET KEY MESSAGE_FILE OUT_DIR [STUBS_DIR]

or the same through the environment: KEYSTORE_SOCKET, KEYSTORE_KEY,
KEYSTORE_MESSAGE, KEYSTORE_OUT, KEYSTORE_STUBS (STUBS_DIR may also simply be
on PYTHONPATH).

The caller must be an application-role caller that may see KEY. Over
`unix:SOCKET` it

* lists the keys it may see (KeyUse.List) and checks KEY is among them;
* signs MESSAGE_FILE with KEY (KeyUse.Sign, DER) and writes OUT_DIR/sig.der;
* fetches the public key (KeyUse.PublicKey) and writes OUT_DIR/pub.pem,
  the SubjectPublicKeyInfo DER as PEM;
* tries Lifecycle.Create, which an application caller may not call: it must
  fail with PERMISSION_DENIED and the trailer keystore-error-kind = Policy.

Any mismatch exits non-zero with a message on stderr.
"""

import base64
import os
import sys

# Bounds every call: the daemon is local, a reply takes milliseconds.
RPC_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0


def fail(message):
    print(f"sign_via_daemon: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def arguments():
    names = ["KEYSTORE_SOCKET", "KEYSTORE_KEY", "KEYSTORE_MESSAGE", "KEYSTORE_OUT", "KEYSTORE_STUBS"]
    args = sys.argv[1:]
    if len(args) > len(names):
        fail(f"too many arguments; usage: {sys.argv[0]} SOCKET KEY MESSAGE_FILE OUT_DIR [STUBS_DIR]")
    values = []
    for i, env in enumerate(names):
        values.append(args[i] if i < len(args) else os.environ.get(env, ""))
    socket, key, message, out, stubs = values
    for value, what in [(socket, "SOCKET"), (key, "KEY"), (message, "MESSAGE_FILE"), (out, "OUT_DIR")]:
        if not value:
            fail(f"{what} missing; usage: {sys.argv[0]} SOCKET KEY MESSAGE_FILE OUT_DIR [STUBS_DIR] "
                 f"(or {', '.join(names)})")
    return socket, key, message, out, stubs


def spki_to_pem(der):
    """PEM of a DER SubjectPublicKeyInfo: base64 in lines of 64 (RFC 7468)."""
    b64 = base64.b64encode(der).decode("ascii")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


def trailer(error, name):
    for k, v in error.trailing_metadata() or ():
        if k == name:
            return v
    return None


def main():
    socket, key, message_file, out, stubs = arguments()
    if stubs:
        sys.path.insert(0, stubs)

    import grpc
    from keystore.v1 import keystore_pb2 as pb
    from keystore.v1 import keystore_pb2_grpc as rpc

    with open(message_file, "rb") as f:
        message = f.read()
    os.makedirs(out, exist_ok=True)

    # grpcio (>= 1.57) sends the percent-encoded socket path as :authority,
    # which keystored's HTTP/2 layer (hyper's h2) refuses as malformed with
    # RST_STREAM(PROTOCOL_ERROR); "localhost" is the convention for Unix
    # sockets (grpc/grpc#38142).
    options = [("grpc.default_authority", "localhost")]
    with grpc.insecure_channel(f"unix:{socket}", options=options) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT)
        except grpc.FutureTimeoutError:
            fail(f"no connection to unix:{socket} within {CONNECT_TIMEOUT} s")
        key_use = rpc.KeyUseStub(channel)
        lifecycle = rpc.LifecycleStub(channel)

        # KeyUse.List: the caller's keys, KEY among them.
        listed = key_use.List(pb.ListRequest(), timeout=RPC_TIMEOUT)
        names = [k.name for k in listed.keys]
        print(f"list: {names}")
        if key not in names:
            fail(f"List does not name {key!r}: {names}")
        info = next(k for k in listed.keys if k.name == key)

        # KeyUse.Sign, DER.
        signed = key_use.Sign(
            pb.SignRequest(name=key, message=message, format=pb.SIGNATURE_FORMAT_DER),
            timeout=RPC_TIMEOUT,
        )
        if signed.format != pb.SIGNATURE_FORMAT_DER:
            fail(f"Sign answered format {signed.format}, not SIGNATURE_FORMAT_DER")
        if not signed.signature:
            fail("Sign answered an empty signature")
        if info.algorithm.startswith("ecdsa-") and signed.signature[0] != 0x30:
            fail("the ECDSA signature is not a DER SEQUENCE")
        print(f"sign: version {signed.version}, {len(signed.signature)} bytes")

        # KeyUse.PublicKey.
        public = key_use.PublicKey(pb.PublicKeyRequest(name=key), timeout=RPC_TIMEOUT)
        if public.algorithm != info.algorithm:
            fail(f"PublicKey algorithm {public.algorithm!r} != List's {info.algorithm!r}")
        if not public.spki_der or public.spki_der[0] != 0x30:
            fail("PublicKey answered no DER SubjectPublicKeyInfo")
        signer = [v for v in info.versions if v.version == signed.version]
        if signer and signer[0].HasField("public_key_spki") and signer[0].public_key_spki != public.spki_der:
            fail("PublicKey's SPKI differs from List's for the signing version")
        print(f"public key: {public.algorithm}, {len(public.spki_der)} bytes SPKI")

        # Lifecycle.Create: not the application role's; refused by policy.
        try:
            lifecycle.Create(
                pb.CreateRequest(name=f"{key}-denied", algorithm=info.algorithm or "ecdsa-p256-sha256"),
                timeout=RPC_TIMEOUT,
            )
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.PERMISSION_DENIED:
                fail(f"Create failed with {e.code()} ({e.details()}), not PERMISSION_DENIED")
            kind = trailer(e, "keystore-error-kind")
            if kind != "Policy":
                fail(f"Create's keystore-error-kind trailer is {kind!r}, not 'Policy'")
            print(f"create: refused, {e.code().name}, keystore-error-kind={kind}: {e.details()}")
        else:
            fail("Lifecycle.Create succeeded for an application caller")

    with open(os.path.join(out, "sig.der"), "wb") as f:
        f.write(signed.signature)
    with open(os.path.join(out, "pub.pem"), "w", encoding="ascii") as f:
        f.write(spki_to_pem(public.spki_der))
    print(f"wrote {os.path.join(out, 'sig.der')} and {os.path.join(out, 'pub.pem')}")
    print("sign_via_daemon: OK")


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as e:  # an unexpected RPC error or I/O error: a failure, with its cause
        import traceback

        traceback.print_exc()
        fail(f"{type(e).__name__}: {e}")
