# A static (musl) binary on distroless/static: no shell, no libc, runs as uid 65532, or as
# whatever UID the platform assigns (OpenShift's restricted-v2: one from the namespace's
# range, group 0): the binary is world-readable and executable and nothing is written to disk.
#   docker build -t REGISTRY/kubevirt-leader-exporter:VERSION .
FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# The exporter alone: the kubectl plugin and what only it uses stay out.
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --no-default-features \
    --bin kubevirt-leader-exporter

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/kubevirt-leader-exporter /usr/local/bin/kubevirt-leader-exporter
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kubevirt-leader-exporter"]
