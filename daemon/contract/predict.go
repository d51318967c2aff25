package contract

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DialFunc connects to one model server (a serving container's socket,
// a pipeline's endpoint).
type DialFunc func(ctx context.Context) (net.Conn, error)

// PredictBatch is how many rows (or, for v2, images) go in one request:
// large enough to amortise the round trip, small enough for a modest
// server's body limit.
const PredictBatch = 500

// imageBatchBytes also bounds a v2 images request: 500 photos can be far
// more than a server takes in one body. 16 MiB of files is about 21 MiB of
// base64, under kilnd's own 32 MiB request limit.
const imageBatchBytes = 16 << 20

// ImageConcurrency is how many one-image sagemaker requests are in flight
// at once: SageMaker's images contract has no batch, so round trips are
// overlapped instead.
const ImageConcurrency = 4

// maxAnswer bounds an answer read into memory; 500 predictions are far less.
const maxAnswer = 64 << 20

// Predict sends rows through the model server dial reaches, PredictBatch
// rows a request, and returns one prediction per row, in order. An error
// names the rows of the batch that failed. It is PredictInputs for csv.
func Predict(ctx context.Context, dial DialFunc, protocol, pipeline string, rows [][]string) ([]string, error) {
	return PredictInputs(ctx, dial, protocol, pipeline, Inputs{Format: FormatCSV, Rows: rows})
}

// PredictInputs sends inputs through the model server dial reaches and
// returns one prediction per row or image, in order. Rows go PredictBatch a
// request; v2 images too, fewer when their files pass imageBatchBytes;
// sagemaker images one a request, ImageConcurrency at a time. An error
// names the rows or images of the request that failed (the first, in input
// order, when several did).
func PredictInputs(ctx context.Context, dial DialFunc, protocol, pipeline string, in Inputs) ([]string, error) {
	protocol, err := checkProtocol(protocol)
	if err != nil {
		return nil, err
	}
	format, err := checkFormat(in.Format)
	if err != nil {
		return nil, err
	}
	in.Format = format
	hc := &http.Client{
		Transport: &http.Transport{
			DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
			MaxIdleConns:        ImageConcurrency,
			MaxIdleConnsPerHost: ImageConcurrency,
			IdleConnTimeout:     30 * time.Second,
		},
		Timeout: 2 * time.Minute,
	}
	defer hc.CloseIdleConnections()
	if format == FormatImages && protocol == ProtocolSageMaker {
		return predictEach(ctx, hc, pipeline, in.Images)
	}
	noun := "rows"
	if format == FormatImages {
		noun = "images"
	}
	out := make([]string, 0, in.Len())
	for start := 0; start < in.Len(); {
		end := batchEnd(in, start)
		preds, err := predictBatch(ctx, hc, protocol, pipeline, in.slice(start, end))
		if err != nil {
			return nil, fmt.Errorf("%s %d-%d: %w", noun, start+1, end, err)
		}
		out = append(out, preds...)
		start = end
	}
	return out, nil
}

// batchEnd is where the batch starting at start ends: PredictBatch rows or
// images, images also at most imageBatchBytes (but at least one).
func batchEnd(in Inputs, start int) int {
	end := min(start+PredictBatch, in.Len())
	if in.Format != FormatImages {
		return end
	}
	size := 0
	for i := start; i < end; i++ {
		size += len(in.Images[i])
		if size > imageBatchBytes && i > start {
			return i
		}
	}
	return end
}

func predictBatch(ctx context.Context, hc *http.Client, protocol, pipeline string, in Inputs) ([]string, error) {
	reqs, err := Encode(protocol, pipeline, in)
	if err != nil {
		return nil, err
	}
	if len(reqs) != 1 { // Encode makes several only for sagemaker images
		return nil, fmt.Errorf("encoded %d requests for one batch", len(reqs))
	}
	noun := "rows"
	if in.Format == FormatImages {
		noun = "images"
	}
	return predictOne(ctx, hc, protocol, reqs[0], in.Len(), noun)
}

// predictOne posts r and reads n predictions (of noun: rows, images) from
// the answer.
func predictOne(ctx context.Context, hc *http.Client, protocol string, r Request, n int, noun string) ([]string, error) {
	answer, err := post(ctx, hc, r)
	if err != nil {
		return nil, err
	}
	preds, err := ParseAnswer(protocol, answer)
	if err != nil {
		return nil, err
	}
	if len(preds) != n {
		return nil, fmt.Errorf("answered %d predictions for %d %s", len(preds), n, noun)
	}
	return preds, nil
}

// predictEach sends sagemaker images one a request, ImageConcurrency at a
// time. The first failure stops the rest and is the error.
func predictEach(ctx context.Context, hc *http.Client, pipeline string, images [][]byte) ([]string, error) {
	reqs, err := Encode(ProtocolSageMaker, pipeline, Inputs{Format: FormatImages, Images: images})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make([]string, len(reqs))
	var (
		mu    sync.Mutex
		first error // the first failure in time: the ones after it are its cancellation
	)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(ImageConcurrency, len(reqs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				preds, err := predictOne(ctx, hc, ProtocolSageMaker, reqs[i], 1, "image")
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("image %d: %w", i+1, err)
					}
					mu.Unlock()
					cancel()
					continue
				}
				out[i] = preds[0]
			}
		}()
	}
feed:
	for i := range reqs {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return nil, first
	}
	if err := ctx.Err(); err != nil { // the caller's: a failure sets first
		return nil, err
	}
	return out, nil
}

// post sends r to the model server and returns the body of a 200.
func post(ctx context.Context, hc *http.Client, r Request) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://model"+r.Path, bytes.NewReader(r.Body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", r.ContentType)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }() // read side
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST %s: %s: %s", r.Path, resp.Status, firstLine(string(b)))
	}
	return b, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
