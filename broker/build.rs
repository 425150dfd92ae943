//! Compiles RocketMQ 5's gRPC protocol (`proto/apache/rocketmq/v2/*.proto`, from
//! apache/rocketmq-apis, Apache-2.0) with protox, a protobuf compiler in pure Rust, so that
//! building needs no `protoc`. tonic-prost-build turns the descriptors into the message types
//! and the MessagingService server and client.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/apache/rocketmq/v2/service.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=proto/apache/rocketmq/v2/definition.proto");
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
