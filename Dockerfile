# Multi-stage build of the certshift operator: a static-enough binary on a
# distroless, non-root base.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY operator operator
COPY verifier verifier
COPY tests tests
COPY crds crds
COPY charts charts
COPY examples examples
RUN cargo build --release -p certshift --locked

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/certshift /usr/local/bin/certshift
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/certshift"]
CMD ["run"]
