package runtime

import (
	"context"
	"fmt"
	"time"

	cg1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cg2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/typeurl/v2"
)

// Metrics are a task's cgroup readings, the same on cgroup v1 and v2.
type Metrics struct {
	At               time.Time `json:"at"`
	CgroupVersion    int       `json:"cgroup_version"` // 1 or 2
	MemoryBytes      uint64    `json:"memory_bytes"`
	MemoryLimitBytes uint64    `json:"memory_limit_bytes,omitempty"`
	MemoryMaxBytes   uint64    `json:"memory_max_bytes,omitempty"` // high-water mark (v1; v2 when the kernel has memory.peak)
	OOMKills         uint64    `json:"oom_kills"`
	CPUNanos         uint64    `json:"cpu_nanos"`
	ThrottledNanos   uint64    `json:"throttled_nanos"`
	Pids             uint64    `json:"pids"`
	PidsLimit        uint64    `json:"pids_limit,omitempty"`
}

// Metrics reads the task's cgroup.
func (t *Task) Metrics(ctx context.Context) (Metrics, error) {
	return t.r.taskMetrics(ctx, t.instance().task)
}

func (r *Runtime) taskMetrics(ctx context.Context, task client.Task) (Metrics, error) {
	m, err := task.Metrics(ctx)
	if err != nil {
		return Metrics{}, fmt.Errorf("metrics of %s: %w", task.ID(), err)
	}
	return DecodeMetrics(m)
}

// DecodeMetrics turns containerd's metric (cgroup v1 or v2 stats in an Any)
// into Metrics.
func DecodeMetrics(m *types.Metric) (Metrics, error) {
	if m == nil || m.Data == nil {
		return Metrics{}, fmt.Errorf("no metric data")
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return Metrics{}, fmt.Errorf("decode metric %s: %w", m.Data.GetTypeUrl(), err)
	}
	out := Metrics{}
	if m.Timestamp != nil {
		out.At = m.Timestamp.AsTime()
	}
	switch s := v.(type) {
	case *cg1.Metrics:
		out.CgroupVersion = 1
		if mem := s.GetMemory(); mem != nil && mem.GetUsage() != nil {
			out.MemoryBytes = mem.GetUsage().GetUsage()
			out.MemoryLimitBytes = mem.GetUsage().GetLimit()
			out.MemoryMaxBytes = mem.GetUsage().GetMax()
		}
		out.OOMKills = s.GetMemoryOomControl().GetOomKill()
		out.CPUNanos = s.GetCPU().GetUsage().GetTotal()
		out.ThrottledNanos = s.GetCPU().GetThrottling().GetThrottledTime()
		out.Pids, out.PidsLimit = s.GetPids().GetCurrent(), s.GetPids().GetLimit()
	case *cg2.Metrics:
		out.CgroupVersion = 2
		out.MemoryBytes = s.GetMemory().GetUsage()
		out.MemoryLimitBytes = s.GetMemory().GetUsageLimit()
		out.MemoryMaxBytes = s.GetMemory().GetMaxUsage()
		out.OOMKills = s.GetMemoryEvents().GetOomKill()
		out.CPUNanos = s.GetCPU().GetUsageUsec() * 1000
		out.ThrottledNanos = s.GetCPU().GetThrottledUsec() * 1000
		out.Pids, out.PidsLimit = s.GetPids().GetCurrent(), s.GetPids().GetLimit()
	default:
		return Metrics{}, fmt.Errorf("unknown metric type %s", m.Data.GetTypeUrl())
	}
	return out, nil
}
