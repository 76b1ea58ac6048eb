# enipool-cni: the plugin binary, copied onto the host by the agent pod's install-cni init
# container (charts/enipool/files/install-cni.sh, run with this image's busybox shell).
# The binary is built static (musl) because it runs on the host, whatever its libc.
# Build from the repository root:  docker build -f images/cni.Dockerfile -t enipool-cni .
FROM rust:1.95.0-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# After COPY: rust-toolchain.toml picks the toolchain the target is added to.
RUN rustup target add x86_64-unknown-linux-musl \
 && cargo build --release --locked -p enipool-cni --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/enipool-cni /enipool-cni

# distroless static with busybox (the :debug variant) for cp/mv/chmod in the install script; root,
# because the host's CNI directories are root-owned (the init container drops every capability).
FROM gcr.io/distroless/static-debian12:debug
COPY --from=build /enipool-cni /opt/enipool/bin/enipool-cni
ENTRYPOINT ["/busybox/sh"]
