# enipool-operator: static-ish Rust binary on distroless, non-root.
# Build from the repository root:  docker build -f images/operator.Dockerfile -t enipool-operator .
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
# The commit enipool_build_info reports (make images passes it).
ARG ENIPOOL_GIT_COMMIT
COPY . .
RUN cargo build --release --locked -p enipool-operator \
 && cp target/release/enipool-operator /enipool-operator

# glibc-linked (aws-lc-rs), so cc-debian12 rather than static. No shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /enipool-operator /usr/local/bin/enipool-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/enipool-operator"]
