package output

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// WriteTokens prints credentials (never their secrets, which answers do not
// carry): a table, protojson ({"tokens": [...]}, or the bare token when one
// was asked for), or that JSON as YAML.
func WriteTokens(w io.Writer, format string, ts []*pb.Token, single bool) error {
	switch format {
	case JSON:
		if single && len(ts) == 1 {
			return WriteJSON(w, ts[0])
		}
		return WriteJSONList(w, "tokens", ts)
	case YAML:
		b, err := JSONList("tokens", ts)
		if err != nil {
			return err
		}
		return WriteYAML(w, b)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tSERVICES\tKIND\tSTATE\tEXPIRES\tCREATED\tCREATED_BY")
	for _, t := range ts {
		kind := "bearer"
		if t.GetAccessKeyId() != "" {
			kind = "aws " + t.GetAccessKeyId()
		}
		services := "*"
		if len(t.GetServices()) > 0 {
			services = strings.Join(t.GetServices(), ",")
		}
		expires := "never"
		if t.GetExpireTime() != nil {
			expires = t.GetExpireTime().AsTime().UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.GetName(), enumText(t.GetRole()), services, kind,
			enumText(t.GetState()), expires, t.GetCreateTime().AsTime().UTC().Format(time.RFC3339), t.GetCreatedBy())
	}
	return tw.Flush()
}
