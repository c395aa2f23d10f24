# One image for every role: llmrouter scheduler | gateway | agent | all-in-one | enginesim.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.Version=${VERSION}" -o /out/llmrouter ./cmd/llmrouter

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/llmrouter /usr/local/bin/llmrouter
USER nonroot
ENTRYPOINT ["/usr/local/bin/llmrouter"]
