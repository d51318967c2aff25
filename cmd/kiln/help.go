package main

// The detailed help of each command, shown by `kiln CMD --help` under the
// one-line help and copied into docs/cli.md and kiln(1) by the docs
// generator. Each ends with examples; TestEveryCommandHasExamples checks.
// Commands whose help is long live beside their Run (predict, feedback,
// models accuracy, completion).

func (statusCmd) Help() string {
	return `What kilnd is doing: its state, containerd and GPU, disk (and disk.min_free), ingest (running,
or paused and why), and for each pipeline its live model with the monitored metric since
promotion, its standby, and how the detector watches it.

Examples:
  kiln status
  kiln status -o json | jq .ingest.state`
}

func (versionCmd) Help() string {
	return `The CLI's version always; kilnd's too when it answers.

Examples:
  kiln version
  kiln version -o json`
}

func (doctorCmd) Help() string {
	return `One line per check, with a fix under each problem; exits 1 when a check failed.

Examples:
  kiln doctor
  kiln doctor -o json | jq '.checks[] | select(.result != "ok")'`
}

func (pipelinesCmd) Help() string {
	return `Pipelines are the spec files in the pipelines folder (/etc/kiln/pipelines). kilnd reads them at
start, on SIGHUP, on a change in the folder and on kiln pipelines reload.

Examples:
  kiln pipelines
  kiln pipelines show pumps
  kiln pipelines validate /etc/kiln/pipelines/pumps.yaml
  kiln pipelines reload`
}

func (pipelinesListCmd) Help() string {
	return `Examples:
  kiln pipelines
  kiln pipelines -o json`
}

func (pipelinesShowCmd) Help() string {
	return `Examples:
  kiln pipelines show pumps
  kiln pipelines show pumps -o json | jq .spec.serve`
}

func (pipelinesValidateCmd) Help() string {
	return `Every problem of every file, FILE:LINE:COL: field: message, one per line; exits 1 on any.

Examples:
  kiln pipelines validate pumps.yaml
  kiln pipelines validate /etc/kiln/pipelines/*.yaml -o json`
}

func (pipelinesReloadCmd) Help() string {
	return `Examples:
  kiln pipelines reload`
}

func (gpuCmd) Help() string {
	return `Examples:
  kiln gpu
  kiln gpu cordon 0 --reason "fan noise, RMA opened"
  kiln gpu uncordon GPU-5f3a...`
}

func (gpuListCmd) Help() string {
	return `Examples:
  kiln gpu
  kiln gpu -o json`
}

func (gpuCordonCmd) Help() string {
	return `A cordoned GPU runs what it runs now and gets nothing new.

Examples:
  kiln gpu cordon 0 --reason "XID 79 twice today"`
}

func (gpuUncordonCmd) Help() string {
	return `Examples:
  kiln gpu uncordon 0`
}

func (datasetsCmd) Help() string {
	return `Examples:
  kiln datasets -p pumps
  kiln datasets show pumps/d12
  kiln datasets release pumps/d13`
}

func (datasetsListCmd) Help() string {
	return `Examples:
  kiln datasets
  kiln datasets -p pumps -o json | jq '.[] | select(.state == "quarantined")'`
}

func (datasetsShowCmd) Help() string {
	return `Examples:
  kiln datasets show pumps/d12
  kiln datasets show pumps/d12 -o json | jq .report`
}

func (datasetsReleaseCmd) Help() string {
	return `Examples:
  kiln datasets release pumps/d13`
}

func (eventsCmd) Help() string {
	return `The audit log, oldest first: who did what (people by uid, kilnd itself), to which pipeline,
run, model or dataset. -o json prints one JSON object per line with -f.

Examples:
  kiln events
  kiln events --since 120 --limit 50
  kiln events -f -o json`
}

func (backupCmd) Help() string {
	return `Runs while kilnd serves. Shows bytes received on a terminal.

Examples:
  kiln backup /srv/backup/kiln-$(date +%F).db
  kiln backup /srv/backup/kiln.db --no-predictions -o json`
}

func (runsCmd) Help() string {
	return `Examples:
  kiln runs -p pumps
  kiln runs show pumps/r9
  kiln runs start pumps
  kiln runs cancel pumps/r9`
}

func (runsListCmd) Help() string {
	return `Examples:
  kiln runs
  kiln runs -p pumps -o json | jq '.[] | select(.state == "failed") | .reason'`
}

func (runsShowCmd) Help() string {
	return `Prints the run as JSON (the same with or without -o json).

Examples:
  kiln runs show pumps/r9`
}

func (runsStartCmd) Help() string {
	return `Examples:
  kiln runs start pumps
  kiln runs start pumps -o json | jq -r .run`
}

func (runsCancelCmd) Help() string {
	return `Examples:
  kiln runs cancel pumps/r9`
}

func (logsCmd) Help() string {
	return `Examples:
  kiln logs pumps/r9
  kiln logs pumps/r9 -f`
}

func (modelsCmd) Help() string {
	return `Examples:
  kiln models -p pumps
  kiln models show pumps/m7
  kiln models accuracy pumps`
}

func (modelsListCmd) Help() string {
	return `Examples:
  kiln models
  kiln models -p pumps -o json | jq -r '.[] | select(.state == "live") | .id'`
}

func (modelsShowCmd) Help() string {
	return `Examples:
  kiln models show pumps/m7
  kiln models show pumps/m7 -o json | jq .monitor`
}

func (promoteCmd) Help() string {
	return `Examples:
  kiln promote pumps/m7
  kiln promote pumps/m7 --force`
}

func (rollbackCmd) Help() string {
	return `Examples:
  kiln rollback pumps
  kiln rollback pumps --to pumps/m5`
}

func (pinCmd) Help() string {
	return `Examples:
  kiln pin pumps pumps/m5`
}

func (unpinCmd) Help() string {
	return `Examples:
  kiln unpin pumps`
}

func (lineageCmd) Help() string {
	return `Examples:
  kiln lineage pumps/m7
  kiln lineage pumps/d12 --down
  kiln lineage pumps/m7 --dot | dot -Tsvg > m7.svg`
}

func (predictionsCmd) Help() string {
	return `Examples:
  kiln predictions purge pumps --before 2026-01-01
  kiln predictions purge pumps --id 3f2a9c`
}

func (predictionsPurgeCmd) Help() string {
	return `Examples:
  kiln predictions purge pumps --before 2026-01-01
  kiln predictions purge pumps --id 3f2a9c -o json`
}

func (gcCmd) Help() string {
	return `kilnd collects on its own; this runs it now.

Examples:
  kiln gc --dry-run
  kiln gc --images`
}

func (imagesCmd) Help() string {
	return `Examples:
  kiln images import tabular-trainer.tar
  kiln images`
}

func (imagesImportCmd) Help() string {
	return `Shows bytes sent of the archive's size on a terminal; lists each image once.

Examples:
  kiln images import tabular-trainer.tar
  docker save my/trainer:3 -o trainer.tar && kiln images import trainer.tar`
}

func (imagesLsCmd) Help() string {
	return `One row per image, its tags joined; -o json lists the tags and kilnd's digest pins apart
(state "tagged" or "pinned").

Examples:
  kiln images
  kiln images ls -o json`
}
