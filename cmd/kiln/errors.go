package main

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/kiln-edge/kiln/daemon/apiclient"
)

// notFoundID finds the kind and ID in kilnd's not-found answers ("model
// iris/m9: not found", "run iris/r9: not found").
var notFoundID = regexp.MustCompile(`^(model|run|dataset|deployment) ([^/ ]+)/[^: ]+`)

// groupName finds the group a refusal names (the admin group, last).
var groupName = regexp.MustCompile(`group "([^"]+)"`)

// nextStep adds to an answer from kilnd what to do next, when the answer
// does not say it already (it names a kiln command, systemctl or usermod):
// the command that lists what exists, or how to get the rights. Errors from
// kiln itself (flags, files, CSV) already say what they need and pass
// unchanged.
func nextStep(err error) error {
	var ae *apiclient.Error
	if !errors.As(err, &ae) {
		return err
	}
	msg := err.Error()
	if strings.Contains(msg, "`kiln ") || strings.Contains(msg, "(kiln ") || strings.Contains(msg, "usermod") {
		return err
	}
	var hint string
	switch ae.Status {
	case http.StatusNotFound:
		switch m := notFoundID.FindStringSubmatch(msg); {
		case m != nil:
			hint = fmt.Sprintf("list them with `kiln %ss -p %s`", m[1], m[2])
			if m[1] == "deployment" {
				hint = "see them with `kiln lineage " + m[2] + "/...`: IDs are listed by `kiln events`"
			}
		case strings.Contains(msg, "pipeline"):
			hint = "see the loaded ones with `kiln pipelines`; a new spec file is read by `kiln pipelines reload`"
		case strings.Contains(msg, "GPU"):
			hint = "see them with `kiln gpu`"
		}
	case http.StatusForbidden:
		group := "GROUP"
		if m := groupName.FindAllStringSubmatch(msg, -1); m != nil {
			group = m[len(m)-1][1]
		}
		hint = "run it with sudo, or ask an admin to add you: usermod -aG " + group + " USER, then log in again"
	case http.StatusServiceUnavailable:
		hint = "`kiln status` and `kiln doctor` say what kilnd is waiting for"
	}
	if hint == "" {
		return err
	}
	return fmt.Errorf("%w; %s", err, hint)
}
