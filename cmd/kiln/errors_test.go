package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/kiln-edge/kiln/daemon/apiclient"
)

// TestNextStep: kilnd's answers that do not say what to do get the command
// that shows what exists, or how to get the rights; answers that already
// say it, and kiln's own errors, pass unchanged.
func TestNextStep(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&apiclient.Error{Status: 404, Message: "model iris/m9: not found"}, "model iris/m9: not found; list them with `kiln models -p iris`"},
		{&apiclient.Error{Status: 404, Message: "run iris/r9: not found"}, "run iris/r9: not found; list them with `kiln runs -p iris`"},
		{&apiclient.Error{Status: 404, Message: `no such pipeline "x" is loaded`}, "no such pipeline \"x\" is loaded; see the loaded ones with `kiln pipelines`; a new spec file is read by `kiln pipelines reload`"},
		{&apiclient.Error{Status: 404, Message: "no dataset p/d9 (list them with `kiln datasets`)"}, "no dataset p/d9 (list them with `kiln datasets`)"},
		{&apiclient.Error{Status: 404, Message: `no GPU "7": no NVIDIA driver: CPU-only`}, "no GPU \"7\": no NVIDIA driver: CPU-only; see them with `kiln gpu`"},
		{&apiclient.Error{Status: 403, Message: `permission denied: uid 7 may not change kilnd; this needs root or membership in group "kiln-admin"`},
			`permission denied: uid 7 may not change kilnd; this needs root or membership in group "kiln-admin"; run it with sudo, or ask an admin to add you: usermod -aG kiln-admin USER, then log in again`},
		{&apiclient.Error{Status: 403, Message: "permission denied: ... (usermod -aG kiln USER)"}, "permission denied: ... (usermod -aG kiln USER)"},
		{&apiclient.Error{Status: 409, Message: "model iris/m2 is already live"}, "model iris/m2 is already live"},
		{fmt.Errorf("import x.tar: %w", &apiclient.Error{Status: 503, Message: "containerd unreachable"}), "import x.tar: containerd unreachable; `kiln status` and `kiln doctor` say what kilnd is waiting for"},
		{errors.New("stdin line 3: bad"), "stdin line 3: bad"},
	} {
		if got := nextStep(tc.err).Error(); got != tc.want {
			t.Errorf("nextStep(%q) =\n  %q\nwant\n  %q", tc.err, got, tc.want)
		}
	}
}
