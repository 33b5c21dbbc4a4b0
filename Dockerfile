# syntax=docker/dockerfile:1
# gitcanary's container image, as the manifests in deploy/ run it:
#   docker build -t registry.example.com/gitcanary:0.1.0 .
#   gitcanary install --export --image registry.example.com/gitcanary:0.1.0 ...

FROM rust:bookworm AS build
WORKDIR /src
# OpenSSL and libgit2 are vendored (Cargo.toml; perl and make build them, both in this
# image). zlib is linked statically too, so the binary needs only glibc and libgcc,
# which distroless/cc provides.
ENV LIBZ_SYS_STATIC=1
COPY . .
# Cache mounts keep the registry and the vendored C builds between image builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gitcanary \
 && cp target/release/gitcanary /usr/local/bin/gitcanary

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/gitcanary /usr/local/bin/gitcanary
# The vendored OpenSSL (Git over https) reads the system's CA bundle from here.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# distroless's nonroot user; the Deployment sets the same with runAsNonRoot.
USER 65532:65532
EXPOSE 9797
ENTRYPOINT ["/usr/local/bin/gitcanary"]
CMD ["--config", "/etc/gitcanary/gitcanary.yaml", "--log-format", "json", "run"]
