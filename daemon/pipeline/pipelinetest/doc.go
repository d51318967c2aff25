// Package pipelinetest holds fakes of what daemon/pipeline drives, for the
// tests of pipeline and of the packages that call it (the monitor):
//
//   - Runtime honours the container contract without containers: training
//     is a nearest-centroid fit (plus the training rows it gets wrong,
//     memorized, so more data makes a strictly better model) written to
//     /opt/ml/model in the workspace,
//     serving an HTTP server on a unix socket answering /ping and
//     /invocations (text/csv). Its "containers" outlive a Manager, as real
//     ones outlive kilnd, so restart tests re-attach them.
//   - Endpoints/Endpoint record flips and what is live.
//   - NoGPUs is a box without a GPU.
//
// The fakes keep the real contract where tests can see it (TestFakeContract
// checks each point): a second start of a running container ID fails, a
// stopped serving container cannot be attached or dialled, Wait returns
// with ctx's error and leaves the container running, Cancel ends a training
// with exit 143, Ready honours its context. What they cannot keep, they say:
// the fake Endpoint carries no traffic, so WaitIdle returns at once.
//
// The real runtime and the real serve.Endpoint are exercised against the
// controller in daemon/pipeline's real tests (real_test.go).
package pipelinetest
