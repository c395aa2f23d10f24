// Package standin is a TEST FIXTURE: a small stand-in for Envoy, used by the
// integration tests (and `make run`) on machines where no Envoy binary can be
// installed (ARCHITECTURE §8). It is never a product feature.
//
// It reads the same Envoy bootstrap real Envoy would read, consumes the same
// ADS stream, calls the same ext_proc filters and applies override_host load
// balancing, reproducing the Envoy behaviour our system relies on
// (ENVOY-NOTES.md) closely enough that tests over it mean something. It
// interprets only the configuration we use: anything else that would change
// behaviour is refused with an error naming the field, so a config the
// stand-in does not understand can never pass silently.
package standin
