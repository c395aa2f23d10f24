# One image for every role: llmrouter scheduler | gateway | agent | all-in-one | enginesim.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# docker build --build-arg VERSION=$(git describe --tags --always) --build-arg REVISION=$(git rev-parse HEAD) .
ARG VERSION=devel
ARG REVISION=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w \
      -X github.com/llmrouter/llmrouter/internal/buildinfo.Version=${VERSION} \
      -X github.com/llmrouter/llmrouter/internal/buildinfo.Revision=${REVISION}" \
    -o /out/llmrouter ./cmd/llmrouter

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/llmrouter /usr/local/bin/llmrouter
USER nonroot
ENTRYPOINT ["/usr/local/bin/llmrouter"]
