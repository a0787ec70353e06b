package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/config"
	"github.com/cpcancel/cpcancel/internal/results"
	"github.com/cpcancel/cpcancel/internal/state"
)

// errUnknownRequest: neither the state bucket nor the scanned dead letters know the request.
var errUnknownRequest = errors.New("unknown request")

// statusReport is what consumer status prints; -json prints it as it is.
type statusReport struct {
	Source string `json:"source"`
	ID     string `json:"id"`
	Key    string `json:"key"`
	Bucket string `json:"bucket"`
	// Found says the bucket holds a record of the request; the fields down to Follow are its.
	Found      bool           `json:"found"`
	Revision   uint64         `json:"revision,omitempty"`
	Phase      state.Phase    `json:"phase,omitempty"`
	Holder     string         `json:"holder,omitempty"`
	LeaseUntil time.Time      `json:"leaseUntil,omitzero"`
	Attempts   int            `json:"attempts"`
	RetryAt    time.Time      `json:"retryAt,omitzero"`
	RequestSeq uint64         `json:"requestSeq,omitempty"`
	Result     *resultSummary `json:"result,omitempty"`
	Final      *resultSummary `json:"final,omitempty"`
	Follow     *followReport  `json:"follow,omitempty"`
	// DeadLetters are the dead letters that claim the request's source and id, among those
	// DeadLetterScan looked at.
	DeadLetters    []deadLetterSummary `json:"deadLetters"`
	DeadLetterScan deadLetterScan      `json:"deadLetterScan"`
}

// resultSummary is one result event of a record.
type resultSummary struct {
	ID              string `json:"id"`
	Outcome         string `json:"outcome"`
	StatusCode      int    `json:"statusCode"`
	ErrorCode       string `json:"errorCode,omitempty"`
	OperationStatus string `json:"operationStatus,omitempty"`
	// Seq is the result's sequence in the result stream when the record notes it: only where the
	// acknowledgement of the request was not confirmed (docs/development.md), else 0.
	Seq uint64 `json:"seq,omitempty"`
}

// followReport is what is followed, from the request's record and its operation's poll record.
type followReport struct {
	Location  string    `json:"location"`
	FirstPoll time.Time `json:"firstPoll"`
	Deadline  time.Time `json:"deadline"`
	// LastPoll, OperationStatus and Terminal are the poll record's: zero before the first poll.
	LastPoll        time.Time `json:"lastPoll,omitzero"`
	OperationStatus string    `json:"operationStatus,omitempty"`
	Terminal        bool      `json:"terminal,omitempty"`
	// NextPoll is when the operation may be polled next; zero once the request is final or its
	// operation ended.
	NextPoll time.Time `json:"nextPoll,omitzero"`
}

type deadLetterSummary struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Reason string    `json:"reason"`
	Size   int       `json:"size"`
}

type deadLetterScan struct {
	Stream string `json:"stream"`
	// First and Last are the sequences looked at, Scanned how many messages, of Messages in all.
	First    uint64 `json:"first"`
	Last     uint64 `json:"last"`
	Scanned  uint64 `json:"scanned"`
	Messages uint64 `json:"messages"`
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("consumer status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	op, err := newOperatorFlags(fs)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	source := fs.String("source", "", "CloudEvents source of the request (required)")
	id := fs.String("id", "", "CloudEvents id of the request (required)")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	scan := fs.Uint64("deadletter-scan", 10000, "look for the request among this many of the newest dead letters (0: all)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: consumer status -source S -id I [-json]\n\n"+
			"Prints a request's state, attempts, results, what is followed and its dead letters.\n"+
			"Exit status: 0 known, 1 unknown, 2 bad flags.\n\n")
		fs.PrintDefaults()
	}
	if ok, err := parseFlags(fs, args); !ok {
		return err
	}
	switch {
	case *source == "" || *id == "":
		return usagef("status: -source and -id are required")
	case fs.NArg() > 0:
		return usagef("status: unexpected argument %q", fs.Arg(0))
	}

	nc, js, err := op.connect("cpcancel-status")
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	defer nc.Close()
	kv, err := js.KeyValue(ctx, op.cfg.Idempotency.Bucket)
	if err != nil {
		return fmt.Errorf("status: bucket %s: %w", op.cfg.Idempotency.Bucket, err)
	}
	store := state.New(js, kv, config.PublishTimeout)
	dls, err := results.OpenDeadLetters(ctx, js, op.cfg.Streams.DeadLetterStream)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	rep, err := requestStatus(ctx, store, dls, *source, *id, *scan, op.cfg.Follow.Interval, time.Now())
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	rep.Bucket = op.cfg.Idempotency.Bucket
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printStatus(stdout, rep, time.Now())
	}
	if !rep.Found && len(rep.DeadLetters) == 0 {
		return fmt.Errorf("status: %w: no record of source=%q id=%q in bucket %s, and no dead letter among %d scanned",
			errUnknownRequest, *source, *id, rep.Bucket, rep.DeadLetterScan.Scanned)
	}
	return nil
}

// requestStatus gathers what is known of the request (source, id): its record, its operation's
// poll record, and its dead letters among the newest scan ones.
func requestStatus(ctx context.Context, store *state.Store, dls *results.DeadLetters, source, id string, scan uint64, interval time.Duration, now time.Time) (statusReport, error) {
	rep := statusReport{Source: source, ID: id, Key: state.Key(source, id), DeadLetters: []deadLetterSummary{}}
	e, err := store.Get(ctx, rep.Key)
	switch {
	case errors.Is(err, state.ErrNotFound):
	case err != nil:
		return rep, err
	default:
		rep.Found = true
		rep.Revision, rep.Phase, rep.Attempts = e.Revision, e.Phase, e.Attempts
		if e.Phase == state.Claimed {
			rep.Holder, rep.LeaseUntil = e.Holder, e.LeaseUntil
		}
		if e.Phase == state.Waiting {
			rep.RetryAt = e.RetryAt
		}
		rep.RequestSeq = e.RequestSeq
		rep.Result = summarizeResult(e.Result, e.ResultSeq)
		rep.Final = summarizeResult(e.Final, e.FinalSeq)
		if e.Follow != nil {
			if rep.Follow, err = followStatus(ctx, store, e.State, interval, now); err != nil {
				return rep, err
			}
		}
	}
	r, err := dls.Scan(ctx, scan, func(dl results.DeadLetter) bool {
		if s, i := dl.Request(); s == source && i == id {
			rep.DeadLetters = append(rep.DeadLetters, deadLetterSummary{Seq: dl.Seq, Time: dl.Time, Reason: dl.Reason(), Size: dl.Size()})
		}
		return true
	})
	if err != nil {
		return rep, err
	}
	rep.DeadLetterScan = deadLetterScan{Stream: dls.Name(), First: r.First, Last: r.Last, Scanned: r.Scanned, Messages: r.Messages}
	return rep, nil
}

// followStatus reports the followed operation of st and when it is polled next: the first poll,
// then an interval after the last one, and no later than the deadline.
func followStatus(ctx context.Context, store *state.Store, st state.State, interval time.Duration, now time.Time) (*followReport, error) {
	f := &followReport{Location: st.Follow.Location, FirstPoll: st.Follow.FirstPoll, Deadline: st.Follow.Deadline}
	p, err := store.Operation(ctx, st.Follow.Location)
	if err != nil {
		return nil, err
	}
	if p.Revision != 0 {
		f.LastPoll, f.OperationStatus, f.Terminal = p.LastPoll, p.Status, p.Terminal
	}
	if st.Phase != state.Following || f.Terminal {
		return f, nil
	}
	f.NextPoll = f.FirstPoll
	if !f.LastPoll.IsZero() {
		f.NextPoll = later(f.FirstPoll, f.LastPoll.Add(interval))
		if f.NextPoll.After(f.Deadline) && f.LastPoll.Before(f.Deadline) {
			f.NextPoll = f.Deadline
		}
	}
	return f, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// summarizeResult reads the parts of a recorded result event (structured JSON) that an operator
// looks for; nil when there is none.
func summarizeResult(recorded []byte, seq uint64) *resultSummary {
	if len(recorded) == 0 {
		return nil
	}
	var ev struct {
		ID   string                 `json:"id"`
		Type string                 `json:"type"`
		Data cancelevent.ResultData `json:"data"`
	}
	s := &resultSummary{Seq: seq}
	if err := json.Unmarshal(recorded, &ev); err != nil {
		s.Outcome = "unreadable: " + err.Error()
		return s
	}
	s.ID, s.Outcome = ev.ID, string(cancelevent.OutcomeOf(ev.Type))
	s.StatusCode, s.OperationStatus = ev.Data.StatusCode, ev.Data.OperationStatus
	if ev.Data.Error != nil {
		s.ErrorCode = ev.Data.Error.Code
	}
	return s
}

// printStatus writes the report for a person, one fact per line.
func printStatus(w io.Writer, r statusReport, now time.Time) {
	fmt.Fprintf(w, "request      source=%s id=%s\n", r.Source, r.ID)
	fmt.Fprintf(w, "key          %s (bucket %s)\n", r.Key, r.Bucket)
	if !r.Found {
		fmt.Fprintln(w, "state        no record (never received, or expired after CPCANCEL_IDEMPOTENCY_TTL)")
	} else {
		fmt.Fprintf(w, "state        %s (revision %d)\n", r.Phase, r.Revision)
		switch r.Phase {
		case state.Claimed:
			fmt.Fprintf(w, "lease        held by %s until %s\n", r.Holder, stamp(r.LeaseUntil, now))
		case state.Waiting:
			fmt.Fprintf(w, "next try     %s\n", stamp(r.RetryAt, now))
		}
		fmt.Fprintf(w, "attempts     %d\n", r.Attempts)
		printResultLine(w, "result", r.Result)
		if r.Follow != nil {
			printResultLine(w, "final", r.Final)
			f := r.Follow
			fmt.Fprintf(w, "following    %s\n", f.Location)
			fmt.Fprintf(w, "             first poll %s, deadline %s\n", stamp(f.FirstPoll, now), stamp(f.Deadline, now))
			if f.LastPoll.IsZero() {
				fmt.Fprintln(w, "             not polled yet")
			} else {
				fmt.Fprintf(w, "             last poll %s, operation status %q\n", stamp(f.LastPoll, now), f.OperationStatus)
			}
			switch {
			case !f.NextPoll.IsZero():
				fmt.Fprintf(w, "             next poll due %s\n", stamp(f.NextPoll, now))
			case f.Terminal && r.Final == nil:
				fmt.Fprintln(w, "             operation ended; final result not recorded yet")
			}
		}
	}
	s := r.DeadLetterScan
	where := fmt.Sprintf("stream %s, %d of %d messages", s.Stream, s.Scanned, s.Messages)
	if s.Scanned > 0 {
		where += fmt.Sprintf(", seq %d-%d", s.First, s.Last)
	}
	if len(r.DeadLetters) == 0 {
		fmt.Fprintf(w, "dead letters none (looked at %s)\n", where)
		return
	}
	fmt.Fprintf(w, "dead letters %d (looked at %s)\n", len(r.DeadLetters), where)
	for _, d := range r.DeadLetters {
		fmt.Fprintf(w, "             seq %d at %s: %s\n", d.Seq, d.Time.UTC().Format(time.RFC3339), terminalSafe(d.Reason))
	}
}

func printResultLine(w io.Writer, name string, r *resultSummary) {
	if r == nil {
		fmt.Fprintf(w, "%-12s none\n", name)
		return
	}
	line := fmt.Sprintf("%-12s %s id=%s status=%d", name, r.Outcome, r.ID, r.StatusCode)
	if r.ErrorCode != "" {
		line += " error=" + r.ErrorCode
	}
	if r.OperationStatus != "" {
		line += " operation=" + r.OperationStatus
	}
	if r.Seq != 0 {
		line += fmt.Sprintf(" (result stream seq %d)", r.Seq)
	}
	fmt.Fprintln(w, line)
}

// stamp is a time in UTC with how far it is from now.
func stamp(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	rel := "in " + d.String()
	if d < 0 {
		rel = (-d).String() + " ago"
	}
	return t.UTC().Format(time.RFC3339) + " (" + rel + ")"
}
