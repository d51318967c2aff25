// Package serve owns a pipeline's stable endpoint: a reverse proxy inside
// kilnd from the pipeline's socket (/run/kiln/serve/<p>.sock, and optionally
// a TCP address) to the serving container of the live model, with an atomic
// blue/green flip and a prediction log that can be replayed and joined.
//
// # Using it
//
//	e, err := serve.New(serve.Options{Pipeline: "iris", PredLogDir: "/var/lib/kiln/predictions",
//		Protocol: "sagemaker", LogGroup: "kiln-admin", Log: log})
//	go e.Serve(unixListener)   // and e.Serve(tcpListener) for serve.listen
//	prev := e.Flip(candidate)  // new requests go to candidate at once
//	_ = e.WaitIdle(ctx, prev.Model()) // requests in flight on prev have finished
//	...
//	err = e.Shutdown(ctx)      // drains requests, flushes the prediction log
//
//	r, err := serve.OpenLogReader("/var/lib/kiln/predictions", "iris")
//	rec, err := r.Lookup(requestID) // errors.Is(err, serve.ErrNotFound) when absent
//
// Before the first Flip (or after Flip(nil)) every request gets 503 with a
// JSON body saying the pipeline has no live model. The caller creates the
// listeners: kilnd's socket is made 0660 and chowned to the kiln group by the
// daemon, and may come from systemd's fd store, so this package never creates
// or unlinks a socket file. Shutdown closes the listeners it serves; a unix
// listener created with net.Listen must have SetUnlinkOnClose(false) if its
// file is to survive a restart (the fd store keeps the socket itself open, so
// clients queue in its backlog while kilnd restarts).
//
// # The flip
//
// Each Flip makes a new route: the Backend plus its own keep-alive pool of
// connections. The live route is one atomic pointer; a request takes it and
// counts itself in flight on it, and re-checks that it is still live, so a
// request either started before the flip (and finishes on the old model, on
// the old pool) or after it (and goes to the new one). The old route closes
// its idle connections at once and every busy one as its request finishes;
// WaitIdle tells the caller when the old container may be stopped. Flipping
// back to a standby builds a fresh route for it (its pool was closed).
//
// # The proxy
//
// Both sides are hand-written HTTP/1.1, not net/http's server,
// http.Transport or httputil.ReverseProxy. Measured here (2 shared cores,
// wrk, 32 connections, same backend): stock ReverseProxy reaches 0.17-0.21x
// of direct (FIELD-NOTES); a net/http server in front of a hand-written
// backend client cost about 42 us of CPU per request and reached ~0.7x
// nginx, with the time in net/http's per-request background-read goroutine,
// deadline churn and Request/Header allocations; this one costs about 21 us
// per request (nginx: about 16), two thirds of it in socket syscalls. A
// client connection is one goroutine that reads the request head into
// per-connection scratch and forwards the header lines as they came, so the
// common path allocates nothing. A request that comes whole costs four
// socket syscalls, as in nginx: read it, writev head and body to the
// backend, read the answer, write it. net.Conn's reads would add one that
// finds nothing before each wait (for the answer, for the next request);
// rawio.go waits first where that is safe. No timer is set per request:
// client connections' limits are enforced by a sweep once a second
// (Endpoint.reap), and a backend connection's deadline moves only when a
// request's would fall outside the slack below. The backend side is a
// keep-alive pool per route (Options.MaxIdleConns, default 64, for 32+
// concurrent clients) over the Backend's DialContext; the response head is
// parsed just enough to frame the body and rebuilt for the client.
//
// The client side is strict where strictness closes a smuggling path:
// obs-fold, control bytes in header values, Content-Length together with
// Transfer-Encoding, conflicting Content-Lengths, any coding but chunked, and
// anything but an origin-form target are refused (400/501/505), and the body
// is always re-framed: the backend gets kiln's own Content-Length, never the
// client's framing. Forwarded: method, target, Host, the client's header
// lines less the hop-by-hop ones (Connection and the headers it names,
// Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade) and Expect
// (kiln answers 100-continue itself), plus X-Kiln-Request-Id. No
// X-Forwarded-For: the backend is a container only kilnd can reach.
// Upgrades (WebSocket) and HTTP/2 are not served. A client connection is
// closed after 5 minutes idle; a request must be read and answered within
// 30 s plus Options.Timeout (each up to a second late: the sweep's period).
// There is no read while the backend works, so a
// client that hangs up is noticed when its answer is written (the backend
// still finishes, bounded by Options.Timeout).
//
// The request body is read whole before it is sent (at most
// Options.MaxRequestBytes, else 413): prediction requests are small, the
// log keeps all of it, the backend always gets a
// Content-Length, and a request can be retried. It is retried once, on a
// fresh connection, when a pooled keep-alive connection fails before any byte
// of the response arrived (the backend closed it while idle); inference is
// free of side effects, so this is safe for POST too. The response body is
// streamed: with the backend's Content-Length when it gave one, else
// re-chunked for HTTP/1.1 clients (HTTP/1.0 ones get the body to the end of
// the connection), flushed whenever the backend has nothing more buffered,
// so token streams stream.
//
// A backend that fails before the response head has been passed on gives 502
// (504 when Options.Timeout passed, cut between Timeout and Timeout plus a
// sixteenth of it, at most a second: the slack that lets a busy connection
// keep its deadline over many requests) with a JSON body naming the model; one
// that fails in the middle of a body aborts the client connection, so a
// truncated answer is never mistaken for a whole one.
//
// # Request ids
//
// X-Kiln-Request-Id is kept when the client sends a sane one (1-128 visible
// ASCII bytes), else generated as a random per-endpoint prefix and an atomic
// counter; it is sent to the backend and returned on the response with
// X-Kiln-Model, the model that answered.
//
// # The prediction log
//
// Every answer from a backend is one record, versioned, from which the
// request can be replayed (through the standby) and joined to late labels:
// request id, model, protocol (Options.Protocol), content type, time,
// latency, status, row count (contract.CountRows), the input (the request
// body, unless the policy leaves it out) and the whole output (up to
// Options.OutputCap, 1 MiB by default; a longer one is kept cut and
// flagged). Row i of a multi-row request is "<request-id>:<i>" to
// label senders; contract.SplitRowID splits such an id.
//
// The folder, PredLogDir/<pipeline>/:
//
//	000000000001.seg   segments: a 16-byte header, then framed records
//	000000000001.idx   the index of a closed segment
//	inputs/ab/<sha256> request bodies over InlineInputMax (64 KiB), one
//	                   file per distinct body, shared by equal bodies
//	.lock              flock for index writes, retention and purge
//
// A record is a binary frame: length, CRC-32C, then a fixed 36-byte header
// (version, flags, status, time, latency, rows, field lengths) and the raw
// id, model, protocol, content type, input (or the input file's sha256 and
// length) and output; record.go draws it. Raw bytes cost a copy where JSON
// would escape every byte of a 64 KiB body. A frame torn by a crash fails
// its length or CRC; each start and each rotation opens a new segment, so
// a torn frame is only ever the last of its segment, and readers stop
// there. An input file is written before any record refers to it (temp
// file, fsync, rename, folder fsync).
//
// Writing: a request only appends its frame (raw input included) to an
// in-memory buffer under a mutex; nothing on that path allocates once the
// buffer has grown, and nothing waits for the disk. One writer goroutine
// swaps the buffer out, counts rows, moves inputs over 64 KiB into files,
// seals the CRCs, writes and fdatasyncs (group fsync, at most once per
// Options.SyncInterval, sooner when the buffer is half full). When the
// buffer is full (Options.LogBuffer, 8 MiB: a stalled disk) the record is
// dropped and counted in Stats.LogDropped. The record is appended before
// the client has the end of its answer, so a client that got an answer can
// count on FlushLog making it visible. Below the daemon's free-disk floor
// (Options.MinFreeBytes, disk.min_free) inputs are no longer kept
// (Stats.LogInputsSkipped) until there is room, and the log says so.
//
// Segments are closed at SegmentBytes (64 MiB: big enough that a 1M-request
// log of small bodies is two of them, small enough that retention frees
// space in steps of under 2% of the default 4 GiB bound). The writer holds
// an exclusive flock on the segment it writes, so retention, purge and
// the rebuild never touch it. When a segment is closed its index is written
// beside it (temp file, fsync, rename) off the writer's path: the sorted
// (FNV-1a of the id, offset) pairs, the time range, the input files the
// segment refers to, a CRC, and the segment length it covers, so a torn
// index or one older than its segment is never used. RebuildIndexes (kilnd
// runs it after READY) writes those a crash or a failure left out.
//
// Reading (LogReader): Lookup maps the indexes read-only and searches them
// in place (interpolation search over the uniform hashes), newest segment
// first, and reads the one record with a pread, so the reader's own memory
// does not grow with the log (the mapped pages are the page cache's). The
// open segment has no index: the reader indexes it in memory as it grows,
// bounded by the segment size, and a closed segment whose index is missing
// is read whole until the rebuild. Scan reads records in log order from a
// time on, skipping segments wholly older by their index. A request id
// logged twice (a client reusing its id) returns the newest record.
//
// Retention (monitor.log in the spec; LogPolicy, ApplyRetention): whole
// segments whose newest record is older than keep go, then the oldest while
// the folder (segments, indexes, input files) is over max_size, never the
// open one; then input files no kept record refers to, once older than a
// grace that covers a file written just before its record. The endpoint
// applies it at each rotation, kilnd's GC every gc.interval (and to the
// logs of pipelines no longer loaded, with the defaults). ApplyRetention
// reports the rate the log grows at and whether max_size holds keep at
// that rate; kilnd warns (and records predictions.retention) when not.
// inputs: sample F keeps the inputs of the requests whose id hashes below
// F, so every reader agrees on which; none keeps no inputs.
//
// Privacy: the folder and every file in it are 0750/0640, owned by root
// and the admin group (Options.LogGroup), since inputs are what clients
// sent. Inputs never go to the endpoint's own log lines, events or metric
// labels. Purge deletes records by time bound or request id: a segment
// whose records all go is removed, one with some is rewritten without them
// (temp file, fsync, rename, new index), and input files no record refers
// to any more are removed; the open segment is closed first
// (Endpoint.RotateLog). WriteBackup archives segments and indexes without
// the input files (`kiln backup`); such records read back with InputKept
// false. Version 1 logs (.jsonl) are not read; retention removes them.
package serve
