// Package sessionkey turns a client's session key (x-session-id, or the
// body's "user") into what the scheduler keeps: a fixed-size digest. The
// gateway sends only the digest (the raw key, often a user id, never leaves
// it), and the scheduler digests any key longer than MaxLen whoever sent it,
// so the affinity map's memory does not grow with what clients put in a
// header or a body field (600 distinct 1 MiB keys once cost the scheduler
// 620 MB).
package sessionkey
