// Package serve owns a pipeline's stable endpoint: a reverse proxy inside
// kilnd from the pipeline's socket (/run/kiln/serve/<p>.sock, and optionally
// a TCP address) to the serving container of the live model, with an atomic
// blue/green flip and a bounded prediction log.
//
// # Using it
//
//	e, err := serve.New(serve.Options{Pipeline: "iris", PredLogDir: "/var/lib/kiln/predictions", Log: log})
//	go e.Serve(unixListener)   // and e.Serve(tcpListener) for serve.listen
//	prev := e.Flip(candidate)  // new requests go to candidate at once
//	_ = e.WaitIdle(ctx, prev.Model()) // requests in flight on prev have finished
//	...
//	err = e.Shutdown(ctx)      // drains requests, flushes the prediction log
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
// per request (nginx: about 16), two thirds of it in the four unavoidable
// socket syscalls. A client connection is one goroutine that reads the
// request head into per-connection scratch and forwards the header lines as
// they came, so the common path allocates nothing. The backend side is a
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
// 30 s plus Options.Timeout. There is no read while the backend works, so a
// client that hangs up is noticed when its answer is written (the backend
// still finishes, bounded by Options.Timeout).
//
// The request body is read whole before it is sent (at most
// Options.MaxRequestBytes, else 413): prediction requests are small, the
// digest for the log needs all of it, the backend always gets a
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
// (504 when Options.Timeout passed) with a JSON body naming the model; one
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
// Every answer from a backend is one JSON line (Prediction) in append-only
// segment files under PredLogDir/<pipeline>/ (segment files
// 000000000001.jsonl, ...): request id, model, time, latency, status, sha256 of
// the request body, and the response body up to Options.OutputCap bytes. A
// request only appends its line to an in-memory buffer under a mutex; one
// writer goroutine swaps the buffer out, writes it and fdatasyncs (group
// fsync, at most once per Options.SyncInterval). A request never waits on
// the disk: when the buffer is full (a stalled disk), the record is dropped
// and counted in Stats.LogDropped. A segment is closed at SegmentBytes (a
// line is never split; one line longer than a segment gets a segment of its
// own) and at most MaxSegments are kept, the oldest deleted first, so the log
// never takes more than about SegmentBytes*MaxSegments. Each start of the
// endpoint opens a new segment, so a line torn by a crash is only ever the
// last of its file; readers skip it. Lookup finds one request id (for late
// labels) and Scan reads everything in order (to join many at once).
package serve
