package daemon

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/kiln-edge/kiln/daemon/api"
)

// groupFile is the group database checkGroups reads.
const groupFile = "/etc/group"

// checkGroups finds members of the admin group who are not in the read
// group. The API lets them read (admin implies read), but the drop folders
// and the endpoint sockets belong to the read group alone: a file has one
// group, and no ACLs are assumed, so no mode can widen them to a second one.
// Such a member needs both memberships to drop data or call an endpoint.
func (d *Daemon) checkGroups() api.Check {
	c := api.Check{Name: "groups"}
	read, admin := d.cfg.Groups.Read, d.cfg.Groups.Admin
	only, err := adminOnlyMembers(groupFile, read, admin)
	switch {
	case err != nil:
		c.Result, c.Detail = api.CheckWarn, err.Error()
		c.Fix = fmt.Sprintf("create the groups (groupadd %s; groupadd %s) or reinstall the package (sysusers.d)", read, admin)
	case len(only) > 0:
		c.Result = api.CheckWarn
		c.Detail = fmt.Sprintf("%s in %s but not %s: they may use the API, but not the drop folders or the endpoint sockets (group %s)",
			strings.Join(only, ", "), admin, read, read)
		c.Fix = fmt.Sprintf("usermod -aG %s NAME for each (members of %s need both groups)", read, admin)
	default:
		c.Result = api.CheckOK
		c.Detail = fmt.Sprintf("every member of %s is also in %s (drop folders and endpoint sockets are group %s)", admin, read, read)
	}
	return c
}

// adminOnlyMembers lists the users that path (in group(5) form) puts in
// group admin but not in group read. It sees the file's member lists, not
// primary groups or groups from other NSS sources (LDAP), which is what a
// package-managed box has.
func adminOnlyMembers(path, read, admin string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read groups: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only
	members := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) != 4 || (fields[0] != read && fields[0] != admin) {
			continue
		}
		var names []string
		for _, m := range strings.Split(fields[3], ",") {
			if m = strings.TrimSpace(m); m != "" {
				names = append(names, m)
			}
		}
		members[fields[0]] = names
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	for _, g := range []string{read, admin} {
		if _, ok := members[g]; !ok {
			return nil, fmt.Errorf("group %s is not in %s", g, path)
		}
	}
	var only []string
	for _, m := range members[admin] {
		if !slices.Contains(members[read], m) {
			only = append(only, m)
		}
	}
	slices.Sort(only)
	return only, nil
}
