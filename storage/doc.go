// Package storage owns kiln's memory: one bbolt file (<state>/kiln.db) holding
// records, lineage and the hash-chained event log, and one content-addressed
// blob folder (<state>/blobs/) holding the bytes those records point at.
//
// It is a leaf: it knows nothing of containerd, NVML or the daemon. Callers
// decide what to write; storage makes the writes durable, ordered and
// auditable, and answers lineage questions with prefix scans.
//
// # Basics
//
// Open takes an exclusive lock on kiln.db (a second kilnd on the same root
// gets ErrLocked after Options.LockTimeout), runs the ordered migrations and
// starts one committer goroutine. Every write goes through Store.Update: the
// committer drains all queued updates into one bbolt transaction (group
// commit, one fsync pair for the lot), then acknowledges each caller. An
// update returns only once its transaction is on disk. Events appended in an
// update get their sequence number and hash inside the committer, so the
// chain has no gaps and records and the events describing them commit
// together or not at all.
//
// Reads (Store.View and the convenience getters) run in bbolt read
// transactions, concurrently with the committer.
//
// # The bucket tree
//
//	meta/
//	    schema        -> uint64 BE, the schema version (see migrations)
//	    head          -> seq uint64 BE || sha256 (32 bytes) of the last event
//	    installation  -> 32 hex digits, random, made with the database (InstallationID)
//	events/
//	    <seq u64 BE>  -> sha256(body) (32 bytes) || body (JSON, "v":1, carries prev)
//	seqs/
//	    <pipeline>/<letter> -> uint64 BE, the last short ID handed out
//	datasets/  <pipeline>/<n u64 BE> -> Dataset    JSON {"v":1,...}  ID p/dN
//	runs/      <pipeline>/<n u64 BE> -> Run        JSON {"v":1,...}  ID p/rN
//	models/    <pipeline>/<n u64 BE> -> Model      JSON {"v":1,...}  ID p/mN
//	deploys/   <pipeline>/<n u64 BE> -> Deployment JSON {"v":1,...}  ID p/eN
//	leases/    <gpu uuid>            -> Lease      JSON {"v":1,...}
//	cordons/   <gpu uuid>            -> Cordon     JSON {"v":1,...}
//	pins/      <pipeline>            -> Pin        JSON {"v":1,...}
//	eventrefs/ <ref> 0x00 <seq u64 BE> -> nil       (EventsFor: a record's history by prefix scan)
//	scores/    <pipeline>/<n u64 BE> -> Scoring    JSON {"v":1,...}  the monitor's scoring of feedback p/dN
//	signals/   <pipeline>/<unix hour u64 BE> -> Signal JSON {"v":1,...} hourly label-free signals
//	monitor/   <pipeline>            -> MonitorState JSON {"v":1,...} the detector's state, an alarm awaiting its decision
//	lineage/
//	    up/    <child> 0x00 <parent> -> edge type   (Ancestors: prefix scan on child)
//	    down/  <parent> 0x00 <child> -> edge type   (Descendants: prefix scan on parent)
//	blobrefs/
//	    <digest> 0x00 <owner id>     -> size u64 BE (who needs which blob; GC and Reconcile)
//
// Keys of per-pipeline records sort numerically within a pipeline because the
// number is big-endian; pipeline names are [a-z0-9-]{1,32} and never contain
// "/". Lineage node IDs are record IDs ("iris/d12") or typed names of things
// outside the store ("uid:1000", "image:sha256:..."); they never contain 0x00.
//
// The blob folder:
//
//	blobs/sha256/<first two hex>/<64 hex>   read-only (0444), never rewritten
//	blobs/tmp/put-*                         in-flight Puts; removed by Reconcile
//
// A blob becomes visible only by rename after its bytes and the file are
// fsynced, and the directory is fsynced after the rename, so a crash leaves
// either the whole blob or a temp file that Reconcile removes.
//
// # Schema and migrations
//
// meta/schema holds the version. Open runs every migration whose target is
// above the stored version, in order, in one transaction; a database whose
// version is above SchemaVersion is refused with ErrNewerSchema and left
// untouched. testdata/v1.db is a version-1 database (written by
// TestGenerateFixture when KILN_GEN_FIXTURE=1) that the tests upgrade.
//
// Every record value carries "v", its encoding version; decoding refuses a
// version it does not know rather than guessing.
//
// # Backups
//
// Store.Backup writes a consistent copy of kiln.db taken in a read
// transaction (bbolt Tx.WriteTo) while writers carry on. The blob folder is
// the other half of a backup: copy blobs/sha256/ after the database (blobs are
// immutable and only ever added before the records that name them, so a
// later copy of the folder covers every blob the database copy refers to;
// Reconcile reports any that are missing after a restore).
//
// # Caveats
//
// Keys and values returned by bbolt are valid only for the life of the
// transaction. Everything this package returns is decoded or copied; code
// using Tx.Bolt directly must copy what it keeps.
//
// An update function may run more than once: when one update in a group
// fails, the transaction is rolled back and the others are re-run without it.
// Update functions must therefore only touch the database through the Tx, and
// have no other side effects.
//
// Cancelling the context given to Update withdraws an update the committer
// has not taken yet; one already in a transaction runs to its outcome, which
// Update then returns (a transaction is short, so this delays the caller by at
// most one commit).
//
// Verify detects an edited or deleted event anywhere in the chain, and a
// truncated tail against meta/head. Someone able to rewrite the whole file can
// rewrite the whole chain; the daemon logs Head to the journal so a rewrite
// can be caught against an outside record.
//
// bbolt never shrinks the file; deleting records frees pages for reuse only.
package storage
