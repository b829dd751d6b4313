//! Generates the etcd v3 gRPC API from `proto/` at build time. `protox`
//! parses the .proto files in pure Rust, so no system `protoc` is needed.

use std::path::Path;

const PROTO_ROOT: &str = "proto";

const PROTOS: &[&str] = &[
    "proto/mvccpb/kv.proto",
    "proto/authpb/auth.proto",
    "proto/etcdserverpb/rpc.proto",
    "proto/v3lockpb/v3lock.proto",
    "proto/v3electionpb/v3election.proto",
    "proto/health/health.proto",
    "proto/peer/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    debug_assert!(Path::new(PROTO_ROOT).is_dir());

    let fds = protox::compile(PROTOS, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // `bytes` fields become `bytes::Bytes`: cheap clones of keys/values.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
