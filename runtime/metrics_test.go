package runtime

import (
	"os"
	"testing"

	cg1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cg2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/typeurl/v2"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestDecodeMetrics proves the decoding of both cgroup versions from
// fixtures shaped like what containerd's shims send (this machine runs
// cgroup v1, so v2 is only ever seen here).
func TestDecodeMetrics(t *testing.T) {
	for _, tc := range []struct {
		file string
		msg  proto.Message
		want Metrics
	}{
		{"testdata/metrics-v1.json", &cg1.Metrics{}, Metrics{CgroupVersion: 1, MemoryBytes: 819200, MemoryLimitBytes: 33554432,
			MemoryMaxBytes: 1019904, CPUNanos: 41234567, ThrottledNanos: 5000000, Pids: 2, PidsLimit: 20}},
		{"testdata/metrics-v2.json", &cg2.Metrics{}, Metrics{CgroupVersion: 2, MemoryBytes: 2097152, MemoryLimitBytes: 67108864,
			MemoryMaxBytes: 60000000, OOMKills: 1, CPUNanos: 1500000000, ThrottledNanos: 20000000, Pids: 3, PidsLimit: 256}},
	} {
		b, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		if err := protojson.Unmarshal(b, tc.msg); err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		a, err := typeurl.MarshalAny(tc.msg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeMetrics(&types.Metric{Data: &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: a.GetValue()}})
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.file, diff)
		}
	}
	if _, err := DecodeMetrics(&types.Metric{Data: &anypb.Any{TypeUrl: "example.com/Other"}}); err == nil {
		t.Error("DecodeMetrics(unknown type) = nil error")
	}
}
