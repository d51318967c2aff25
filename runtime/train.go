package runtime

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/containerd/containerd/v2/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TrainSpec is one training run.
type TrainSpec struct {
	Common
	// Workspace is the run's host folder (e.g. /var/lib/kiln/runs/<id>);
	// PrepareWorkspace builds the SageMaker layout in it.
	Workspace string
	// Channels maps a channel name ("train", "validation") to a host folder
	// mounted read-only at /opt/ml/input/data/<name>.
	Channels map[string]string
	// ContentType is every channel's ContentType in inputdataconfig.json, as
	// SageMaker names its data: text/csv (the default),
	// application/jsonlines, application/x-image.
	ContentType string
	// Hyperparameters are written to hyperparameters.json (SageMaker passes
	// every value as a string).
	Hyperparameters map[string]string
	// JobName, RunID and Dataset become TRAINING_JOB_NAME, KILN_RUN_ID and
	// KILN_DATASET; RunID also labels the container.
	JobName string
	RunID   string
	Dataset string
	// Timeout ends the run (SIGTERM, then SIGKILL after Grace); zero = none.
	// The deadline is recorded in a label, so it survives a kilnd restart.
	Timeout time.Duration
	Grace   time.Duration
}

// Workspace paths under a run's folder.
func (s *TrainSpec) configDir() string { return filepath.Join(s.Workspace, "input", "config") }

// ModelDir is where the trainer's /opt/ml/model lands on the host.
func (s *TrainSpec) ModelDir() string { return filepath.Join(s.Workspace, "model") }

// OutputDir is where /opt/ml/output (metrics.json, failure) lands.
func (s *TrainSpec) OutputDir() string { return filepath.Join(s.Workspace, "output") }

// PrepareWorkspace writes the SageMaker configuration files and creates the
// model and output folders (root's until Train hands them to the run's
// workload id). The workspace itself becomes root's alone (0700): the
// container reaches its folders through bind mounts, which do not need the
// path above them, so no other local account can reach the run's data,
// model, output or log, whatever mode the caller's parent folder has.
// Train calls it; it is exported for callers that want to inspect the
// layout first.
func PrepareWorkspace(s *TrainSpec) error {
	if s.Workspace == "" || !filepath.IsAbs(s.Workspace) {
		return fmt.Errorf("%w: workspace %q must be an absolute path", ErrBadSpec, s.Workspace)
	}
	if err := os.MkdirAll(s.Workspace, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(s.Workspace, 0o700); err != nil {
		return fmt.Errorf("workspace %s: %w", s.Workspace, err)
	}
	for _, d := range []string{s.configDir(), s.ModelDir(), s.OutputDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	hp := s.Hyperparameters
	if hp == nil {
		hp = map[string]string{}
	}
	idc := map[string]any{}
	for _, ch := range slices.Sorted(maps.Keys(s.Channels)) {
		src := s.Channels[ch]
		if st, err := os.Stat(src); err != nil || !st.IsDir() {
			return fmt.Errorf("%w: channel %s: %s is not a folder", ErrBadSpec, ch, src)
		}
		idc[ch] = map[string]string{"ContentType": cmp.Or(s.ContentType, "text/csv"), "TrainingInputMode": "File",
			"S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
	}
	rc := map[string]any{"current_host": "algo-1", "hosts": []string{"algo-1"},
		"network_interface_name": "lo", "current_group_name": "homogeneousCluster",
		"current_instance_type": "local", "instance_groups": []map[string]any{{
			"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": []string{"algo-1"}}}}
	for name, v := range map[string]any{"hyperparameters.json": hp, "inputdataconfig.json": idc, "resourceconfig.json": rc} {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(s.configDir(), name), append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Train prepares the workspace, creates the training container from the
// image's digest and starts `<image> train`. The returned Task's Wait gives
// the exit (with OOM, timeout and /opt/ml/output/failure); the caller
// Deletes it once the outcome is recorded. The container ID is persisted
// (by containerd) before Train returns, so a kilnd that dies here finds it
// with Reconcile.
func (r *Runtime) Train(ctx context.Context, s TrainSpec) (*Task, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if err := PrepareWorkspace(&s); err != nil {
		return nil, err
	}
	img, digest, err := r.image(ctx, s.Image)
	if err != nil {
		return nil, err
	}
	mounts := []specs.Mount{
		bind(s.configDir(), "/opt/ml/input/config", true),
		bind(s.ModelDir(), "/opt/ml/model", false),
		bind(s.OutputDir(), "/opt/ml/output", false),
	}
	for _, ch := range slices.Sorted(maps.Keys(s.Channels)) {
		mounts = append(mounts, bind(s.Channels[ch], "/opt/ml/input/data/"+ch, true))
	}
	jobName := s.JobName
	if jobName == "" {
		jobName = s.ID
	}
	env := envList(s.Env, map[string]string{
		"TRAINING_JOB_NAME": jobName, "KILN_RUN_ID": s.RunID, "KILN_DATASET": s.Dataset,
		"SM_MODEL_DIR": "/opt/ml/model", "SM_OUTPUT_DATA_DIR": "/opt/ml/output",
	})
	args := s.Args
	if args == nil {
		args = []string{"train"}
	}
	labels := r.labels(&s.Common, KindTrain, digest)
	labels[LabelOutput] = s.OutputDir()
	labels[LabelOwned] = ownedLabel(s.ModelDir(), s.OutputDir())
	if s.RunID != "" {
		labels[LabelRun] = s.RunID
	}
	if s.Timeout > 0 {
		labels[LabelDeadline] = formatDeadline(time.Now().Add(s.Timeout))
	}
	if s.Grace > 0 {
		labels[LabelGrace] = s.Grace.String()
	}
	labels[LabelLogLimit] = strconv.FormatInt(s.LogLimit, 10)
	// The trainer writes its model and output as its workload id; the
	// config and channels stay root's and read-only.
	prepare := func(uid, gid int) error {
		for _, d := range []string{s.ModelDir(), s.OutputDir()} {
			if err := ensureOwnedDir(d, uid, gid); err != nil {
				return fmt.Errorf("workspace %s: %w", d, err)
			}
		}
		return nil
	}
	return r.launch(ctx, "training", &s.Common, img, digest, labels, r.specOpts(&s.Common, img, args, mounts, env), prepare)
}

// image resolves ref to an image record and its digest, pinned: the
// container is created from the digest's own record, so a retag between
// Resolve and create cannot swap the image.
func (r *Runtime) image(ctx context.Context, ref string) (client.Image, string, error) {
	im, err := r.getImage(ctx, ref)
	if err != nil {
		return nil, "", err
	}
	digest := im.Target.Digest.String()
	if pinned, err := r.c.ImageService().Get(ctx, digest); err == nil {
		im = pinned
	}
	return client.NewImage(r.c, im), digest, nil
}
