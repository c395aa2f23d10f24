// Package clip bounds client input that is echoed back: an error message
// built from a request's model name (or any other field a client controls)
// quotes at most a short prefix of it, so a 1 MiB model name costs a 1 MiB
// request, not a 1 MiB answer, log line or gRPC message as well.
package clip
