// Package servetest runs a server under test on a loopback port until the
// test ends: the servers here (the scheduler's API, the engine simulator, the
// pd proxy's engines) all serve a listener until their context ends. It is
// imported only by tests.
package servetest
