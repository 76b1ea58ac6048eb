# enipool-agent. Runs as root with host networking: it programs netlink routes and rules and
# nftables on the node and enters pod network namespaces (the chart grants NET_ADMIN and SYS_ADMIN
# only; see agent.privileged), so a non-root user would only need the same capabilities back.
# The same image, as `enipool-agent sysctl-init`, is the chart's privileged init container (it
# needs no shell).
# It execs `nft -f -` to apply its nftables table atomically, hence Debian's nftables package
# rather than distroless. No AWS SDK credentials are ever configured in this image.
# Build from the repository root:  docker build -f images/agent.Dockerfile -t enipool-agent .
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
# The commit enipool_build_info reports (make images passes it).
ARG ENIPOOL_GIT_COMMIT
COPY . .
RUN cargo build --release --locked -p enipool-agent \
 && cp target/release/enipool-agent /enipool-agent

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /enipool-agent /usr/local/bin/enipool-agent
EXPOSE 61678
ENTRYPOINT ["/usr/local/bin/enipool-agent"]
