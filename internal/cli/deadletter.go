package cli

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/results"
)

const deadLetterUsage = `Usage:
  consumer deadletter list [-limit N]                              the newest dead letters
  consumer deadletter show [-max-body N] SEQ                       one dead letter's headers and body
  consumer deadletter replay [-dry-run] [-rate N/s] (SEQ... | -all) publish again, then remove

Exit status: 0 done, 1 a dead letter not found or not replayed, 2 bad flags or arguments.
`

func runDeadLetter(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("deadletter: want list, show or replay (-h for help)")
	}
	switch args[0] {
	case "list":
		return runDeadLetterList(ctx, args[1:], stdout, stderr)
	case "show":
		return runDeadLetterShow(ctx, args[1:], stdout, stderr)
	case "replay":
		return runDeadLetterReplay(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, deadLetterUsage)
		return nil
	}
	return usagef("deadletter: unknown command %q (want list, show or replay)", args[0])
}

// deadLetterFlags defines the flags every deadletter command has.
func deadLetterFlags(name string, stderr io.Writer) (*flag.FlagSet, *operatorFlags, *string, error) {
	fs := flag.NewFlagSet("consumer deadletter "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	op, err := newOperatorFlags(fs)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("deadletter %s: %w", name, err)
	}
	stream := fs.String("stream", op.cfg.Streams.DeadLetterStream, "dead-letter stream (its default from CPCANCEL_DEADLETTER_STREAM)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), deadLetterUsage+"\nFlags of "+name+":\n")
		fs.PrintDefaults()
	}
	return fs, op, stream, nil
}

// openDeadLetters connects and opens the dead-letter stream; call the returned close when done.
func openDeadLetters(ctx context.Context, op *operatorFlags, name, stream string) (*results.DeadLetters, func(), error) {
	nc, js, err := op.connect("cpcancel-deadletter")
	if err != nil {
		return nil, nil, fmt.Errorf("deadletter %s: %w", name, err)
	}
	dls, err := results.OpenDeadLetters(ctx, js, stream)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("deadletter %s: %w", name, err)
	}
	return dls, nc.Close, nil
}

func runDeadLetterList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, op, stream, err := deadLetterFlags("list", stderr)
	if err != nil {
		return err
	}
	limit := fs.Uint64("limit", 100, "list this many of the newest dead letters (0: all)")
	if ok, err := parseFlags(fs, args); !ok {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("deadletter list: unexpected argument %q", fs.Arg(0))
	}
	dls, done, err := openDeadLetters(ctx, op, "list", *stream)
	if err != nil {
		return err
	}
	defer done()
	fmt.Fprintf(stdout, "%-20s  %8s  %7s  %s\n", "TIME", "SEQ", "BYTES", "REASON")
	r, err := dls.Scan(ctx, *limit, func(dl results.DeadLetter) bool {
		fmt.Fprintf(stdout, "%-20s  %8d  %7d  %s\n", dl.Time.UTC().Format(time.RFC3339), dl.Seq, dl.Size(), terminalSafe(dl.Reason()))
		return true
	})
	if err != nil {
		return fmt.Errorf("deadletter list: %w", err)
	}
	fmt.Fprintf(stdout, "%d of %d dead letters in %s\n", r.Scanned, r.Messages, dls.Name())
	return nil
}

func runDeadLetterShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, op, stream, err := deadLetterFlags("show", stderr)
	if err != nil {
		return err
	}
	maxBody := fs.Int("max-body", 4096, "print at most this many bytes of the body")
	if ok, err := parseFlags(fs, args); !ok {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("deadletter show: want one sequence number, got %d arguments", fs.NArg())
	}
	seq, err := parseSeq(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("deadletter show: %w", err)
	}
	dls, done, err := openDeadLetters(ctx, op, "show", *stream)
	if err != nil {
		return err
	}
	defer done()
	dl, err := dls.Get(ctx, seq)
	if err != nil {
		return fmt.Errorf("deadletter show: %w", err)
	}
	fmt.Fprintf(stdout, "seq %d, stored %s, %d bytes\n\nHeaders:\n", dl.Seq, dl.Time.UTC().Format(time.RFC3339Nano), dl.Size())
	for _, k := range slices.Sorted(maps.Keys(dl.Header)) {
		for _, v := range dl.Header[k] {
			fmt.Fprintf(stdout, "  %s: %s\n", terminalSafe(k), terminalSafe(v))
		}
	}
	printBody(stdout, dl.Data, *maxBody)
	return nil
}

// printBody writes a body as text when it is printable UTF-8, else as a hex dump, cut at max bytes.
func printBody(w io.Writer, body []byte, max int) {
	shown := body
	if max >= 0 && len(shown) > max {
		shown = shown[:max]
	}
	if printable(shown) {
		fmt.Fprintf(w, "\nBody (%d bytes):\n%s\n", len(body), shown)
	} else {
		fmt.Fprintf(w, "\nBody (%d bytes, binary, as hex):\n%s", len(body), hex.Dump(shown))
	}
	if len(shown) < len(body) {
		fmt.Fprintf(w, "... %d more bytes not shown (-max-body)\n", len(body)-len(shown))
	}
}

func printable(b []byte) bool {
	// A cut may split the last rune: allow an incomplete one at the end.
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n <= 1 {
			return len(b) < utf8.UTFMax && !utf8.FullRune(b)
		}
		if r < ' ' && r != '\n' && r != '\r' && r != '\t' || control(r) {
			return false
		}
		b = b[n:]
	}
	return true
}

// control reports whether r is DEL or a C1 control (U+0080-U+009F, e.g. CSI), which a terminal
// may act on.
func control(r rune) bool { return r == 0x7f || r >= 0x80 && r <= 0x9f }

// terminalSafe replaces with ? what a terminal would act on (control characters: escape
// sequences that move the cursor, rewrite lines or set the title) in text that came from a
// message: dead letters hold whatever anyone published.
func terminalSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' && r != '\t' || control(r) {
			return '?'
		}
		return r
	}, s)
}

func parseSeq(s string) (uint64, error) {
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil || seq == 0 {
		return 0, usagef("%q is not a sequence number", s)
	}
	return seq, nil
}

// parseRate reads "N/s" or "N" (per second); 0 means no limit.
func parseRate(s string) (float64, error) {
	n, err := strconv.ParseFloat(strings.TrimSuffix(s, "/s"), 64)
	if err != nil || n < 0 {
		return 0, usagef("-rate %q: want replays per second, as N/s", s)
	}
	return n, nil
}

func runDeadLetterReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, op, stream, err := deadLetterFlags("replay", stderr)
	if err != nil {
		return err
	}
	all := fs.Bool("all", false, "replay every dead letter stored when the replay starts")
	dryRun := fs.Bool("dry-run", false, "print what would be replayed, and change nothing")
	rateFlag := fs.String("rate", "10/s", "replay at most this many dead letters per second (0: no limit)")
	subject := fs.String("subject", op.cfg.Streams.RequestSubject, "subject to publish replays on (its default from CPCANCEL_REQUEST_SUBJECT)")
	requestStream := fs.String("request-stream", op.cfg.Streams.RequestStream, "replay only dead letters that came from this stream (its default from CPCANCEL_REQUEST_STREAM)")
	if ok, err := parseFlags(fs, args); !ok {
		return err
	}
	rate, err := parseRate(*rateFlag)
	if err != nil {
		return fmt.Errorf("deadletter replay: %w", err)
	}
	var seqs []uint64
	for _, a := range fs.Args() {
		seq, err := parseSeq(a)
		if err != nil {
			return fmt.Errorf("deadletter replay: %w", err)
		}
		seqs = append(seqs, seq)
	}
	switch {
	case *all && len(seqs) > 0:
		return usagef("deadletter replay: give sequence numbers or -all, not both")
	case !*all && len(seqs) == 0:
		return usagef("deadletter replay: give sequence numbers or -all")
	}
	dls, done, err := openDeadLetters(ctx, op, "replay", *stream)
	if err != nil {
		return err
	}
	defer done()

	rp := &replayer{dls: dls, subject: *subject, requestStream: *requestStream, dryRun: *dryRun, out: stdout}
	if rate > 0 {
		rp.every = time.Duration(float64(time.Second) / rate)
	}
	if *all {
		var failed error
		r, err := dls.Scan(ctx, 0, func(dl results.DeadLetter) bool {
			failed = rp.replay(ctx, dl)
			return failed == nil || !isFatal(failed)
		})
		if err == nil && failed != nil && isFatal(failed) {
			err = failed
		}
		if err != nil {
			return fmt.Errorf("deadletter replay: %w", err)
		}
		fmt.Fprintf(stdout, "%s of %d dead letters (seq %d-%d)\n", rp.summary(), r.Scanned, r.First, r.Last)
	} else {
		for _, seq := range seqs {
			dl, err := dls.Get(ctx, seq)
			if errors.Is(err, results.ErrNoDeadLetter) {
				fmt.Fprintf(stdout, "seq %d: no such dead letter (replayed already, removed, or never stored)\n", seq)
				rp.skipped++
				continue
			}
			if err != nil {
				return fmt.Errorf("deadletter replay: %w", err)
			}
			if err := rp.replay(ctx, dl); err != nil && isFatal(err) {
				return fmt.Errorf("deadletter replay: %w", err)
			}
		}
		fmt.Fprintln(stdout, rp.summary())
	}
	if rp.skipped > 0 {
		return fmt.Errorf("deadletter replay: not replayed: %d of the dead letters asked for", rp.skipped)
	}
	return nil
}

// errSkipped is a dead letter that is not to be replayed; the others go on.
var errSkipped = errors.New("skipped")

func isFatal(err error) bool { return !errors.Is(err, errSkipped) }

// replayer replays dead letters one at a time, at most one per every.
type replayer struct {
	dls           *results.DeadLetters
	subject       string
	requestStream string
	dryRun        bool
	every         time.Duration
	out           io.Writer

	last                         time.Time
	replayed, duplicate, skipped int
}

// replay publishes dl again and waits for the acknowledgement, then removes it, even when
// interrupted meanwhile (within its own bound): a dead letter left behind would be replayed a
// second time by a later run once the request stream's duplicate window (2 minutes) is over.
func (rp *replayer) replay(ctx context.Context, dl results.DeadLetter) error {
	if from := dl.Header.Get(cancelevent.HeaderStream); from != "" && from != rp.requestStream {
		fmt.Fprintf(rp.out, "seq %d: came from stream %s, not the request stream %s: not replayed\n", dl.Seq, from, rp.requestStream)
		rp.skipped++
		return errSkipped
	}
	id := results.ReplayID(rp.dls.Name(), dl.Seq)
	if rp.dryRun {
		fmt.Fprintf(rp.out, "seq %d: would replay %d bytes to %s as %s (%s)\n", dl.Seq, dl.Size(), rp.subject, id, terminalSafe(dl.Reason()))
		rp.replayed++
		return nil
	}
	if err := rp.pace(ctx); err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, config.PublishTimeout)
	defer cancel()
	ack, err := rp.dls.Republish(pctx, dl, rp.subject)
	if err != nil {
		return err
	}
	rctx, cancelRemove := context.WithTimeout(context.WithoutCancel(ctx), config.PublishTimeout)
	defer cancelRemove()
	if err := rp.dls.Remove(rctx, dl.Seq); err != nil {
		return fmt.Errorf("%w (its replay is stored at %s seq %d: remove it with `nats stream rmm %s %d`, as replaying it again "+
			"after the request stream's duplicate window would store it a second time)", err, ack.Stream, ack.Sequence, rp.dls.Name(), dl.Seq)
	}
	if ack.Duplicate {
		rp.duplicate++
		fmt.Fprintf(rp.out, "seq %d: replayed before as %s (dropped as a duplicate); removed\n", dl.Seq, id)
		return nil
	}
	rp.replayed++
	fmt.Fprintf(rp.out, "seq %d: replayed to %s as %s, stored at %s seq %d; removed\n", dl.Seq, rp.subject, id, ack.Stream, ack.Sequence)
	return nil
}

// pace waits until the next replay is allowed.
func (rp *replayer) pace(ctx context.Context) error {
	if rp.every > 0 && !rp.last.IsZero() {
		if wait := time.Until(rp.last.Add(rp.every)); wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	rp.last = time.Now()
	return nil
}

func (rp *replayer) summary() string {
	verb := "replayed"
	if rp.dryRun {
		verb = "would replay"
	}
	return fmt.Sprintf("%s %d, %d replayed before, %d not replayed", verb, rp.replayed, rp.duplicate, rp.skipped)
}
