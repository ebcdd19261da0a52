# A static (musl) binary on distroless/static: no shell, no libc, runs as uid 65532, or as
# whatever UID the platform assigns (OpenShift's restricted-v2: one from the namespace's
# range, group 0): the binary is world-readable and executable and nothing is written to disk.
#   docker build -t REGISTRY/kubevirt-leader-exporter:VERSION .
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg COMMIT=$(git rev-parse HEAD) \
#       -t REGISTRY/kubevirt-leader-exporter:VERSION --push .
# COMMIT becomes build_info's commit label (`unknown` without it).
# The build stage runs on the build machine's own platform and cross-compiles for each
# target platform (scripts/build-static): no emulation, and the same build as the release's.
FROM --platform=$BUILDPLATFORM docker.io/library/rust:1.95.0-slim-bookworm AS build
ARG TARGETARCH
ARG COMMIT=unknown
WORKDIR /src
COPY . .
RUN KUBEVIRT_LEADER_EXPORTER_COMMIT="$COMMIT" scripts/build-static "$TARGETARCH" /out

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kubevirt-leader-exporter /usr/local/bin/kubevirt-leader-exporter
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kubevirt-leader-exporter"]
