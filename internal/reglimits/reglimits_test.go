package reglimits

import (
	"fmt"
	"strings"
	"testing"
)

// TestNames: Names keeps the leading names within the bounds left after
// earlier lists, skips names too long or empty (never shortening one into
// another name), counts what it left off, and returns a list within the
// bounds as it is.
func TestNames(t *testing.T) {
	var at []string
	for i := range MaxNames {
		at = append(at, fmt.Sprint(i))
	}
	if kept, dropped := Names(at, 0, 0); &kept[0] != &at[0] || len(kept) != MaxNames || dropped != 0 {
		t.Fatalf("a list at the limit: %d kept (copied: %v), %d dropped", len(kept), &kept[0] != &at[0], dropped)
	}
	kept, dropped := Names(append(at[:MaxNames:MaxNames], "over"), 0, 0)
	if len(kept) != MaxNames || dropped != 1 || kept[MaxNames-1] != at[MaxNames-1] {
		t.Fatalf("one past the count: %d kept, %d dropped", len(kept), dropped)
	}
	kept, dropped = Names([]string{"a", "", strings.Repeat("x", MaxNameBytes+1), "b"}, 0, 0)
	if strings.Join(kept, ",") != "a,b" || dropped != 1 {
		t.Fatalf("kept %q, dropped %d; want a,b and 1", kept, dropped)
	}
	kept, dropped = Names([]string{"a", "b", "c"}, MaxNames-2, 0)
	if strings.Join(kept, ",") != "a,b" || dropped != 1 {
		t.Fatalf("after earlier lists: kept %q, dropped %d", kept, dropped)
	}
	kept, dropped = Names([]string{"ab", "c", "de"}, 0, MaxNamesBytes-3)
	if strings.Join(kept, ",") != "ab,c" || dropped != 1 {
		t.Fatalf("bytes after earlier lists: kept %q, dropped %d", kept, dropped)
	}
}
