// Package sagemaker owns the container contract kiln's Go example images
// share, so that each example keeps only its model: the SageMaker
// bring-your-own-container training layout under /opt/ml (hyperparameters,
// channels, model.json, metrics.json and the failure file), and the serving
// side (listening on $KILN_SOCKET or port 8080, draining on SIGTERM, the
// /ping and Open Inference Protocol v2 routes, their JSON envelopes and
// one-line error replies). The request formats themselves (CSV rows,
// images) stay in each example's model package.
package sagemaker
