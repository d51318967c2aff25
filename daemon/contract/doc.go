// Package contract owns kiln's serving contract in one place: how a
// pipeline's rows or images (Inputs) become requests to a model server in
// either protocol
// (SageMaker CSV on /invocations, Open Inference Protocol v2 JSON on
// /v2/models/<pipeline>/infer), how a logged request body turns back into
// rows, how an answer turns into one prediction per row, how labelled rows
// are read (Labelled: CSV parts and JSON Lines), and how predictions are
// scored against labels (whole sets with Score, single rows with RowOutcome,
// and the promotion Gate).
//
// The evaluator (daemon/pipeline), the monitor (daemon/monitor), the
// prediction log (daemon/serve) and `kiln predict` all go through it, so the
// contract is encoded once and a change to it shows in one package. It uses
// the standard library only: cmd/kiln links it and must stay free of
// containerd, go-nvml and bbolt.
//
// The wire formats, as far as kiln uses them:
//
//	sagemaker  POST /invocations, Content-Type text/csv: one CSV record per
//	           row, feature columns in training order, no header. The answer
//	           is one prediction a line.
//	v2         POST /v2/models/<pipeline>/infer, Content-Type
//	           application/json: {"inputs":[{"name":"input","datatype":"FP64",
//	           "shape":[rows,features],"data":[...row-major...]}]}. The answer
//	           has an output "label" with one element per row.
//
// For jsonl pipelines, sagemaker sends Content-Type application/jsonlines
// instead: one JSON object a row, keyed by feature name, no label; v2 sends
// the FP64 tensor as for csv. For images pipelines, sagemaker sends one
// image a request (Content-Type application/x-image, the PNG or JPEG file as
// the body; answer: one prediction line); v2 sends one BYTES tensor "input"
// of shape [images] whose elements are the files in standard base64
// (kiln's convention), answered like rows. docs/container-contract.md is
// the same contract for image builders.
//
// CountRows runs on the serving hot path for every request and allocates
// nothing; everything else is for the evaluator, the monitor and the CLI and
// favours clear errors over speed.
package contract
