// Package promtest reads metrics back from a Prometheus registry in unit
// tests: the value of the first series of a name whose labels include the
// pairs asked for. It is imported only by tests.
package promtest
