//! Compiles etcd's v3 API (our own transcription in `proto/etcd`) into the
//! gRPC server stubs of `graft_kv::etcd`, with protox: no `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/etcd");
    let fds = protox::compile(["rpc.proto"], ["proto/etcd"])?;
    tonic_prost_build::configure().build_client(false).build_server(true).compile_fds(fds)?;
    Ok(())
}
