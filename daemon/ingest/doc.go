// Package ingest owns the way data enters kiln: it watches drop/<pipeline>/ and
// feedback/<pipeline>/ for every loaded pipeline, decides when a dropped file or batch is
// complete, reads it once into the blob store while parsing and checking it, splits its rows
// into train and holdout parts, and records the result as a dataset version (accepted) or a
// quarantined batch, with lineage and an event, then empties the drop folder.
//
// # Completion
//
// fsnotify reports a rename into a folder as a plain Create and hides close-after-write, so
// the kernel is asked instead. A file is taken when
//
//   - its size, mtime and mode have not changed for the pipeline's data.settle (0 allowed:
//     a file renamed in is then taken at once; a file renamed in keeps its mtime, so it has
//     been unchanged since that mtime), and
//   - no process holds it open for writing: the worker opens it O_RDONLY|O_NONBLOCK|O_NOFOLLOW
//     and takes a read lease (fcntl F_SETLEASE F_RDLCK), which the kernel refuses with EAGAIN
//     while any writer has it open. A refused lease is retried after 100 ms. The lease is
//     held while the file is read; if it was broken meanwhile (someone opened the file for
//     writing) the read is thrown away and retried. Filesystems without leases, and
//     processes without CAP_LEASE, fall back to settle alone (logged once).
//
// Names starting with "." or ending in .tmp, .part or ~ are ignored until renamed. A
// subfolder is one batch, closed by a _SUCCESS file at its top; fsnotify is not recursive,
// so each subfolder gets its own watch when it appears, and a closed batch still holding
// temp names is polled until they are gone.
//
// # Exactly once
//
// One coordinator goroutine owns all watch state: a map of known entries (by folder and
// name), a timer heap for settle and retries, and a ready queue feeding the workers. Events,
// the start-up rescan and the rescan after an inotify overflow (fsnotify.ErrEventOverflow)
// all go through the same map, so an entry seen twice is still taken once; an entry that
// changes while a worker reads it is looked at again when the worker is done.
//
// Across restarts the store is the memory: a dataset record (with the sha256 of every file)
// is durable before the file leaves the drop folder. A file found again after a crash
// between the two, or dropped again by a person, has content the index already knows: it
// is recorded as a dataset.duplicate event and removed, never a second version. Concurrent
// workers reserve content digests before committing, so two copies in one burst are one
// version and one duplicate.
//
// # Reading
//
// Each file is opened once, fstat'ed (it must be the inode lstat saw), read once and
// streamed into the blob store (storage.PutBlob hashes while copying); the same bytes feed
// the parser: files up to 1 MiB from memory, bigger ones through a pipe, so hashing runs on
// one core and parsing on the other (at most two big files at a time). The files of an
// images or files batch, mostly small, are read 48 at a time into one storage.BlobBatch:
// each blob's content is fsynced as it is stored, the blob folders once each when the last
// file is in, before the version is recorded; images are decoded as they arrive and
// recorded in file order, so reasons do not depend on timing. After the read the
// path must still name the same inode (else "deleted/replaced while being read": an
// ingest.rejected event and nothing recorded) and the inode must be unchanged (else the
// read is retried).
//
// Rejected before reading, each as a quarantined dataset with no content (release refused),
// its entry moved to quarantine/<p>/<dN>/ beside REASON.json: symlinks (never followed),
// hard links (nlink > 1), FIFOs, sockets and devices (never opened), names that are not
// UTF-8 or not local, empty files, files over data.max_file_size. Lines over MaxLineLength
// quarantine the batch after reading.
//
// # Validation, split, versions
//
// CSV (comma, header, RFC 4180 quotes, CRLF and a UTF-8 BOM accepted) and JSONL (one flat
// object a line) are parsed for real: header and column count, column types (inferred on
// the first version, then held to the newest admitted version's schema), the label column
// and its allowed values, row bounds, null/NaN/inf fraction, duplicate-row fraction, value
// ranges, and drift: the PSI of every feature against the live model's data window, or
// before there is one, against all admitted versions (see drift.go for the binning that keeps
// small batches from reading noise as drift). Format files is checked by extension, size
// and count; images below. The first violation of each rule is kept with file, line, column,
// observed and allowed values.
//
// Every row goes to the holdout part when xxh64(row, evaluate.holdout.seed)/2^64 is below
// evaluate.holdout.fraction, else to the train part: the same row always lands on the same
// side, whatever file, batch, line ending or BOM it arrives in. Parts are CSV (with the
// header) or JSONL blobs of their own, so training links the train part alone; a part that is
// byte-equal to a dropped file is not stored twice. Labelled feedback is split the same way
// (see Feedback). With evaluate.holdout.file every row is train. A JSONL pipeline's column
// order is its first version's key order: later objects may write keys in any order.
//
// # Images
//
// Format images takes batch folders only (a loose file is quarantined, rule image_layout): in
// torchvision's ImageFolder layout (<class>/<image>, deeper folders belong to their top
// folder's class) or with a labels.csv (LabelsCSV: header path,label) at the batch's top,
// which then names every image's class and is kept in Files with no label. An image file is
// read whole into memory (a decoder needs all of it; at most two files over 1 MiB at a time),
// stored, and decoded in full from the same bytes by image/png or image/jpeg, as its extension
// says (validate.files.extensions, default .png .jpg .jpeg); a header declaring more than 64
// megapixels is refused before decoding. Only a few numbers of each image are kept, so a batch
// of 10,000 images costs memory for one image and a small record each. Checks: decode
// (image_decode), layout, labels.csv against the files, validate.labels, files.max_size and
// max_count, min_per_class (data only), and drift on six statistics per image (the mean and
// standard deviation of each channel, ImageStats) through the same PSI as features: a cheap
// proxy for lighting, exposure and camera changes, not for what the images show. Reasons name
// files as <batch>/<path>. An image goes to the holdout part by the rows' rule, xxh64 of its
// bytes and evaluate.holdout.seed against the fraction; the version's Files carry each image's
// Label and Holdout, Train and Holdout stay nil, Rows counts the images, and the manifest's
// parts count the images of each side (no blob of their own) and Classes those of each class.
// A labelled image batch in feedback/<p>/ is a feedback version of type rows. Late labels
// (see Feedback) are the other feedback an images pipeline takes: a loose file or a batch
// folder in feedback/<p>/ with no image in it, only .csv files (or only .jsonl/.ndjson), is
// read as request_id,label rows (JSONL: id and label), and its version's Format is csv (or
// jsonl); any other header is quarantined (feedback_columns).
//
// A batch becomes one storage.Dataset: Files are the dropped files plus MetaName, a JSON blob
// holding the Manifest (files, parts with rows, schema, split, a profile of each column for
// later drift checks) and the validation Report; Format is the format it was read as (every
// version, one rejected unread included); Digest is the sha256 of the manifest's JSON;
// lineage links the file owner's uid (edge "dropped") and, when quarantined, "check:<rule>"
// (edge quarantined). Events: dataset.accepted, dataset.quarantined, dataset.duplicate,
// dataset.released, ingest.rejected, ingest.paused, ingest.resumed. The dataset events carry
// details "kind" (data or feedback) and, for feedback, "feedback" (its type, once known), so
// the pipeline controller trains on data events alone.
//
// # Feedback
//
// A batch in feedback/<p>/ is a feedback version (Dataset.Kind feedback) of one of two types,
// decided by its first file's header (CSV) or first object (JSONL); every file of a batch
// must be of that type:
//
//   - labelled rows (Dataset.Feedback "rows"): exactly the data's columns, label included,
//     in the data's order (JSONL: the same keys), held to the newest admitted data version's
//     schema and types as data is. They are split into train and holdout parts by the data's
//     hash and seed, so a row held out of the data is held out of the feedback, and a retrain
//     can be gated on feedback it never saw. Before any data version is admitted there are no
//     columns to hold them to: they are quarantined (feedback_before_data), data first.
//   - late labels (Dataset.Feedback "labels"): the header request_id,label (JSONL: objects
//     with the keys id and label), joined later by the monitor to the prediction log. They
//     need no data. Usable rows are stored as one normalised CSV, request_id,label, listed
//     in Files as LabelsName and in the manifest as the part "labels"; Train and Holdout
//     are nil. A request id repeated in a batch keeps its first usable label.
//
// A header that is neither is quarantined (feedback_columns) naming the file, the line, the
// first column that differs and both accepted headers. Feedback is not held to the data's
// batch rules (validate.rows, max_duplicate_fraction, drift): a few labelled rows, some
// repeated, are ordinary. Bad rows of feedback (a label missing or outside
// data.validate.labels, an empty or repeated request id, a malformed label line) are left out
// of the version and counted in its report (Report.Feedback, and Report.LeftOut with the
// file and line of the first of each), never dropped silently; only a batch with no usable
// row left is quarantined (no_usable_rows), its reason saying why each kind of row went.
// Other rules (types, syntax of labelled rows, line length of data) quarantine as for data.
// Empty and oversized feedback files are rejected unread like data.
//
// Feedback never starts a training run. The monitor reads feedback back with ReadFeedback,
// leaves out of a model's score the rows it trained on with TrainRowKeys and RowKey (a
// seedless hash of the trimmed feature values, numbers by value), and records the rows it
// joined from a labels version with CommitJoined: a feedback version of type "joined",
// parsed, checked and split exactly like labelled rows, linked from its labels version
// (edge joined, Dataset.Source), made once per source. Its parts hold the joined inputs, so
// retraining never depends on the prediction log, which expires.
//
// Ingest pauses, says so through Options.Status and an event, while taking a batch would
// leave less than disk.min_free on the state disk, and resumes on its own.
//
// Release (kiln datasets release P/dN) turns a quarantined version into a released one,
// recorded with the person's uid (edge released and event), and removes its quarantine
// folder: the content is already in the blob store.
//
// # Caveats
//
//   - Removing a pipeline stops its watches; its folders, files and history stay, and a
//     pipeline loaded again rescans its folders.
//   - A batch folder never closed by _SUCCESS waits forever.
//   - A writer the kernel cannot see (a network filesystem client) is covered by settle
//     only, and mtime decides settle: a client that sets an old mtime and keeps writing is
//     not detected.
//   - Quarantined batches keep their blobs until gc.quarantine_age expires them.
package ingest
