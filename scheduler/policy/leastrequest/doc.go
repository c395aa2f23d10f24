// Package leastrequest is the least-request policy: the candidate with the
// fewest requests — running plus waiting as last reported, plus the
// scheduler's picks since — goes first; ties are broken at random so equal
// instances share a burst.
package leastrequest
