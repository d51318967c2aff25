package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"
)

// logPoll is how often a log file's size is checked, and how often
// FollowLog looks for new bytes. logPollFast is the check's pace right after
// a rotation: a task that filled half its cap within one poll may be
// flooding (tens of MB/s from a tight print loop), and the pair then
// overshoots the cap by what it writes in one interval.
var (
	logPoll     = 500 * time.Millisecond
	logPollFast = 20 * time.Millisecond
)

// capLog keeps path and path.1 together near limit: once path passes half
// the limit, its content is copied to path.1 and path is truncated. The shim
// opened path with O_APPEND, so its next write lands at the new end. The
// pace stays fast while the file grows quickly (not only right after a
// rotation), and one last check runs when ctx ends, so a burst between the
// last check and the task's end does not stay on disk past the cap.
func capLog(ctx context.Context, path string, limit int64, log *slog.Logger) {
	wait := logPoll
	var last int64
	check := func() {
		rotated, err := rotateIfOver(path, limit/2)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("cap log file", "path", path, "err", err)
		}
		size := int64(0)
		if st, err := os.Stat(path); err == nil {
			size = st.Size()
		}
		wait = logPoll
		if rotated || size-last > limit/16 {
			wait = logPollFast
		}
		last = size
	}
	for {
		select {
		case <-ctx.Done():
			check()
			if err := trimPair(path, limit); err != nil && !errors.Is(err, os.ErrNotExist) {
				log.Warn("cap log file", "path", path, "err", err)
			}
			return
		case <-time.After(wait):
		}
		check()
	}
}

// logFloodTail is the most a flooded log keeps of the burst: the copy must
// be quick, since the task keeps writing while it runs.
const logFloodTail = 1 << 20

// rotateIfOver moves path to path.1 once it is over half. A live file over
// twice half (the whole cap: a flood between two checks) keeps only its last
// half (at most logFloodTail) in path.1, after a line saying how much was
// dropped; copying it all would let one burst put any size on disk.
func rotateIfOver(path string, half int64) (bool, error) {
	st, err := os.Stat(path)
	if err != nil || st.Size() <= half {
		return false, err
	}
	src, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	defer func() { _ = src.Close() }() // never written, only truncated: Truncate's error is the one that counts
	tmp := path + ".1.tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return false, err
	}
	// The whole live file moves, so a follower that had read up to offset
	// N of it finds the rest at offset N of path.1 (after a flood only the
	// tail moves, and a follower loses what was dropped). Truncate before
	// the rename: a follower that sees a new path.1 knows the live file
	// restarted from zero.
	var from io.Reader = src
	if size := st.Size(); size > 2*half {
		keep := min(half, logFloodTail)
		if _, err := fmt.Fprintf(dst, "kiln: %d bytes of log dropped here: the task wrote faster than its log cap allows\n", size-keep); err != nil {
			_ = dst.Close()
			return false, err
		}
		from = io.NewSectionReader(src, size-keep, keep)
	}
	if _, err := io.Copy(dst, from); err != nil {
		_ = dst.Close()
		return false, err
	}
	if err := dst.Close(); err != nil {
		return false, err
	}
	if err := src.Truncate(0); err != nil {
		return false, err
	}
	return true, os.Rename(tmp, path+".1")
}

// trimPair holds the pair to limit once the task's handle has ended. While
// it runs, path.1 may hold up to the whole cap (a rotation moves the whole
// live file) beside a live file of up to half, so the pair can pass the cap
// by half; with no follower left to keep offsets for, path.1 keeps only its
// tail, after a line saying how much was dropped.
func trimPair(path string, limit int64) error {
	live, err := os.Stat(path)
	if err != nil {
		return err
	}
	old, err := os.Stat(path + ".1")
	if err != nil || old.Size()+live.Size() <= limit {
		return err
	}
	keep := max(limit-live.Size(), 0)
	src, err := os.Open(path + ".1")
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }() // read only
	tmp := path + ".1.tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(dst, "kiln: %d bytes of log dropped here: the task wrote faster than its log cap allows\n", old.Size()-keep)
	if err == nil {
		_, err = io.Copy(dst, io.NewSectionReader(src, old.Size()-keep, keep))
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, path+".1")
}

// ReadLog writes a task's whole retained log (path.1, then path) to w.
func ReadLog(path string, w io.Writer) error {
	for _, p := range []string{path + ".1", path} {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		_, err = io.Copy(w, f)
		_ = f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// FollowLog writes the retained log (path.1, then path) to w and then
// follows path, across kiln's rotations, until ctx ends (it then returns
// nil). It is `kiln logs RUN -f`; the caller ends ctx when the run is over
// (after one last poll, so the last lines are not lost). A rotation shows as
// a new path.1 (a new inode): the unread rest of the old live file is at the
// follower's offset in it.
func FollowLog(ctx context.Context, path string, w io.Writer) error {
	rotated := inode(path + ".1")
	if old, err := os.ReadFile(path + ".1"); err == nil {
		if _, err := w.Write(old); err != nil {
			return err
		}
	}
	var off int64
	buf := make([]byte, 64<<10)
	t := time.NewTicker(logPoll / 2)
	defer t.Stop()
	for {
		if ino := inode(path + ".1"); ino != rotated {
			rotated = ino
			if old, err := os.ReadFile(path + ".1"); err == nil && int64(len(old)) > off {
				if _, err := w.Write(old[off:]); err != nil {
					return err
				}
			}
			off = 0
		}
		f, err := os.Open(path)
		if err == nil {
			st, serr := f.Stat()
			// Smaller than what we read, and no new .1 yet: a rotation is
			// between its truncate and its rename; wait for the rename.
			if serr == nil && st.Size() >= off {
				for {
					n, rerr := f.ReadAt(buf, off)
					if n > 0 {
						if _, err := w.Write(buf[:n]); err != nil {
							_ = f.Close()
							return err
						}
						off += int64(n)
					}
					if rerr != nil {
						break
					}
				}
			}
			_ = f.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func inode(path string) uint64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Ino
	}
	return 0
}
