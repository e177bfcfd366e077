//! Compiles `proto/keystore/v1/keystore.proto` with protox (a protobuf
//! compiler in Rust), so building needs no `protoc` on the machine.

/// Messages with a secret field: import secrets, derived keys, plaintexts.
const SECRET_MESSAGES: [&str; 5] = [
    "ImportRequest",
    "DeriveResponse",
    "AgreeResponse",
    "EncryptRequest",
    "DecryptResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let file = root.join("keystore/v1/keystore.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    tonic_prost_build::configure()
        // Messages that carry secrets get a redacting Debug (src/redact.rs).
        .skip_debug(SECRET_MESSAGES.iter().map(|m| format!("keystore.v1.{m}")))
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
