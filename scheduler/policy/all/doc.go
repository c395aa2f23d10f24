// Package all links every scheduling policy into the binary: import it for
// its side effect. One import per line, so adding a policy touches one line.
package all
