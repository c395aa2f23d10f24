package logging

import (
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestLevelsAndFormats(t *testing.T) {
	for _, f := range []string{"json", "console"} {
		log, err := New("warn", f)
		if err != nil {
			t.Fatalf("New(warn, %s): %v", f, err)
		}
		if log.Core().Enabled(zap.InfoLevel) || !log.Core().Enabled(zap.WarnLevel) {
			t.Errorf("%s: level warn not applied", f)
		}
	}
	if _, err := New("loud", "json"); err == nil || !strings.Contains(err.Error(), "debug, info, warn, error") {
		t.Errorf("bad level: %v", err)
	}
	if _, err := New("info", "xml"); err == nil || !strings.Contains(err.Error(), "json, console") {
		t.Errorf("bad format: %v", err)
	}
}
