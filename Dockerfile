# syntax=docker/dockerfile:1
# Build: docker build --build-arg VERSION=$(git describe --tags --always) --build-arg REVISION=$(git rev-parse HEAD) -t cpcancel .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
# .ci/run runs this exact line, so CI proves the image's binary builds.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" -o /out/consumer ./cmd/consumer

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="cpcancel" \
      org.opencontainers.image.description="Cancels Azure Marketplace offer operations from CloudEvents on NATS JetStream" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/consumer /usr/local/bin/consumer
USER 65532:65532
ENV CPCANCEL_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/consumer"]
