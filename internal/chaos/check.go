package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/emulator"
)

// StoredResult is one message of the result stream.
type StoredResult struct {
	Seq    uint64
	Stored time.Time // the stream's timestamp
	// ID and Type are the event's; Data its decoded data. Err is set when the message is not a
	// decodable result.
	ID, Type string
	Data     cancelevent.ResultData
	Err      error
}

// FaultRecord is a fault as it was injected.
type FaultRecord struct {
	Fault
	// Start is when it began; End when it was lifted (the process restarted, the storm over, the
	// API switched to the new token).
	Start, End time.Time
	// Skipped says why it was not injected, if it was not.
	Skipped string
	// Note is said about it in the report, e.g. how a SIGTERMed replica exited.
	Note string
	// Violation, when set, is a broken guarantee seen while injecting it (a SIGTERM exit not 0).
	Violation string
}

// StreamState is the size of a stream at the end of a run.
type StreamState struct {
	Name string
	Msgs uint64
}

// ConsumerState is what a consumer still holds at the end of a run.
type ConsumerState struct {
	Stream, Name string
	Pending      uint64
	AckPending   int
}

// Observed is what a run left: the streams' contents, the API's records, the faults.
type Observed struct {
	// Start is when the run began: plan and schedule offsets count from it.
	Start time.Time
	// Published is when each request (by index) was first stored in the request stream; Resent
	// when its re-send was.
	Published, Resent map[int]time.Time
	Results           []StoredResult
	// DeadLetters are the bodies of the dead-letter stream's messages.
	DeadLetters []string
	// Unexpected are replica exits the harness did not cause (each restarted).
	Unexpected []string
	// StartFailures are replicas that could not start while nats-server was down (restarted, as
	// a supervisor would): reported, not violations.
	StartFailures []string
	Calls         []emulator.Call
	Operations    []emulator.OperationRecord
	Faults        []FaultRecord
	// Streams and Consumers are the request and follow streams and their consumers at the end.
	Streams   []StreamState
	Consumers []ConsumerState
	// Settled is how long the wait for the system to settle took after the schedule ended, and
	// SettledOK whether it did settle (rather than time out).
	Settled   time.Duration
	SettledOK bool
}

// CheckOptions are the settings the checks judge against.
type CheckOptions struct {
	// FollowInterval is CPCANCEL_FOLLOW_INTERVAL.
	FollowInterval time.Duration
	// PollTolerance is the share of FollowInterval two polls of one operation may come early.
	PollTolerance float64
	// InFlight is how long after the API received a request a SIGKILL still catches it in flight
	// (the call, and storing its outcome).
	InFlight time.Duration
}

// Report is the verdict on a run.
type Report struct {
	// Violations are broken guarantees; a run passes with none.
	Violations []string
	sections   []string
}

func (r *Report) violate(format string, args ...any) {
	r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
}

func (r *Report) section(title string, lines ...string) {
	r.sections = append(r.sections, "== "+title+"\n"+strings.Join(lines, "\n"))
}

// Summary is the report for people: what ran, what was stored, what the API saw, recovery times.
func (r *Report) Summary() string {
	s := strings.Join(r.sections, "\n")
	if len(r.Violations) == 0 {
		return s + "\n== verdict: every guarantee held"
	}
	return s + fmt.Sprintf("\n== verdict: %d violations", len(r.Violations))
}

type reqKey struct{ source, id string }

// reqState is what was stored for one request.
type reqState struct {
	first, final     map[string]int // outcome → stored copies
	firstStored      time.Time      // earliest first result
	lastFirstStored  time.Time
	firstData        cancelevent.ResultData
	finalData        cancelevent.ResultData
	finalStored      time.Time
	unknownIDResults int
}

// transientCodes are error codes of results that end a request after the API failed for a while
// (5xx, 429, timeouts): outcomes the faults explain.
func transientCode(code string) bool {
	switch code {
	case "TooManyRequests", "ServiceUnavailable", "InternalServerError", // the emulator's own codes
		cancelevent.CodeTimeout, cancelevent.CodeTransportError:
		return true
	}
	return strings.HasPrefix(code, "http_5") || code == cancelevent.HTTPCode(429) ||
		code == cancelevent.HTTPCode(408) || code == cancelevent.HTTPCode(409)
}

// definitive reports whether an API answer settles a cancel: 2xx or a permanent 4xx. Calls
// answered otherwise (no answer, 401, 408, 409, 429, 5xx) are retried by design.
func definitive(status int) bool {
	switch {
	case status == 200 || status == 202:
		return true
	case status == 401 || status == 408 || status == 409 || status == 429:
		return false
	}
	return status >= 400 && status < 500
}

// Check judges a run of plan against the guarantees.
func Check(plan Plan, obs Observed, o CheckOptions) *Report {
	r := &Report{}
	if o.PollTolerance == 0 {
		o.PollTolerance = 0.2
	}
	byKey := map[reqKey]*Request{}
	byOffer := map[string]*Request{}
	for i := range plan.Requests {
		q := &plan.Requests[i]
		byKey[reqKey{q.Source, q.ID}] = q
		byOffer[q.PublisherID+"/"+q.OfferID] = q
	}

	r.checkTraffic(plan, obs)
	states := r.checkResults(plan, obs, byKey)
	r.checkOutcomes(plan, states)
	r.checkCalls(plan, obs, o, byOffer, states)
	r.checkPolls(obs, o, byOffer, states)
	r.checkLeftovers(plan, obs)
	r.recovery(plan, obs, states)
	return r
}

func (r *Report) checkTraffic(plan Plan, obs Observed) {
	counts := map[Scenario]int{}
	for _, q := range plan.Requests {
		counts[q.Scenario]++
	}
	var parts []string
	for _, s := range Scenarios {
		parts = append(parts, fmt.Sprintf("%s %d", s, counts[s]))
	}
	published := len(obs.Published)
	lines := []string{
		fmt.Sprintf("requests: %d planned, %d published (%s), %d re-sent, %d dead letters planned",
			len(plan.Requests), published, strings.Join(parts, ", "), len(obs.Resent), len(plan.DeadLetters)),
	}
	if published != len(plan.Requests) {
		r.violate("harness: only %d of %d requests were published", published, len(plan.Requests))
	}
	byKind := map[Kind]int{}
	skipped := 0
	for _, f := range obs.Faults {
		if f.Skipped != "" {
			skipped++
			continue
		}
		byKind[f.Kind]++
		if f.Violation != "" {
			r.violate("%s: %s", f.Fault, f.Violation)
		}
	}
	parts = parts[:0]
	for _, k := range Kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, byKind[k]))
	}
	lines = append(lines, fmt.Sprintf("faults injected: %s (%d skipped)", strings.Join(parts, ", "), skipped))
	for _, u := range obs.Unexpected {
		r.violate("%s", u)
	}
	for _, s := range obs.StartFailures {
		lines = append(lines, "start-up failures (allowed): "+s)
	}
	if len(obs.Unexpected) > 0 {
		lines = append(lines, fmt.Sprintf("replicas that exited by themselves (restarted): %d", len(obs.Unexpected)))
	}
	for _, f := range obs.Faults {
		line := fmt.Sprintf("  %-60s", f.Fault)
		switch {
		case f.Skipped != "":
			line += " skipped: " + f.Skipped
		default:
			line += fmt.Sprintf(" injected +%s, lifted +%s", since(obs.Start, f.Start), since(obs.Start, f.End))
		}
		if f.Note != "" {
			line += "; " + f.Note
		}
		lines = append(lines, line)
	}
	r.section("traffic and faults", lines...)
}

func since(start, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Sub(start).Round(100 * time.Millisecond).String()
}

// checkResults reads the result stream: ids deterministic, one stored copy per id, no two
// outcomes for one request.
func (r *Report) checkResults(plan Plan, obs Observed, byKey map[reqKey]*Request) map[int]*reqState {
	states := map[int]*reqState{}
	copies := map[string][]StoredResult{}
	var undecodable, unknown, first, final int
	for _, res := range obs.Results {
		if res.Err != nil {
			undecodable++
			r.violate("result stream seq %d: not a result: %v", res.Seq, res.Err)
			continue
		}
		q := byKey[reqKey{res.Data.RequestSource, res.Data.RequestID}]
		if q == nil {
			unknown++
			r.violate("result stream seq %d: result %s for a request never sent (source %q, id %q)", res.Seq, res.ID, res.Data.RequestSource, res.Data.RequestID)
			continue
		}
		copies[res.ID] = append(copies[res.ID], res)
		st := states[q.Index]
		if st == nil {
			st = &reqState{first: map[string]int{}, final: map[string]int{}}
			states[q.Index] = st
		}
		outcome := cancelevent.OutcomeOf(res.Type)
		switch res.ID {
		case cancelevent.ResultID(q.Source, q.ID, outcome):
			first++
			st.first[string(outcome)]++
			if st.firstStored.IsZero() || res.Stored.Before(st.firstStored) {
				st.firstStored, st.firstData = res.Stored, res.Data
			}
			if res.Stored.After(st.lastFirstStored) {
				st.lastFirstStored = res.Stored
			}
		case cancelevent.FinalResultID(q.Source, q.ID, outcome):
			final++
			st.final[string(outcome)]++
			if st.finalStored.IsZero() || res.Stored.Before(st.finalStored) {
				st.finalStored, st.finalData = res.Stored, res.Data
			}
		default:
			st.unknownIDResults++
			r.violate("%s: result seq %d has id %s, neither ResultID nor FinalResultID of outcome %q", q.ID, res.Seq, res.ID, outcome)
		}
	}
	var dupIDs, dupResent int
	var dupLines []string
	for id, cs := range copies {
		if len(cs) < 2 {
			continue
		}
		q := byKey[reqKey{cs[0].Data.RequestSource, cs[0].Data.RequestID}]
		seqs := make([]string, len(cs))
		for i, c := range cs {
			seqs[i] = fmt.Sprintf("%d (+%s)", c.Seq, since(obs.Start, c.Stored))
		}
		if _, resent := obs.Resent[q.Index]; resent {
			dupResent++
			dupLines = append(dupLines, fmt.Sprintf("  %s (re-sent): result %s stored %d times: seq %s", q.ID, id, len(cs), strings.Join(seqs, ", ")))
			continue
		}
		dupIDs++
		r.violate("%s (%s): result %s (%s) stored %d times: seq %s", q.ID, q.Scenario, id, cs[0].Type, len(cs), strings.Join(seqs, ", "))
	}
	sort.Strings(dupLines)
	lines := []string{fmt.Sprintf("result stream: %d messages: %d first results, %d final results, %d undecodable, %d for unknown requests",
		len(obs.Results), first, final, undecodable, unknown),
		fmt.Sprintf("result ids stored more than once: %d (of requests not re-sent), %d (of re-sent requests, reported only)", dupIDs, dupResent)}
	r.section("results", append(lines, dupLines...)...)
	return states
}

func outcomeList(m map[string]int) []string {
	var out []string
	for o := range m {
		out = append(out, o)
	}
	sort.Strings(out)
	return out
}

// checkOutcomes: one first result per request, a final one exactly when the first is
// cancelling, no contradictions, and outcomes as the scenario says unless a fault explains them.
func (r *Report) checkOutcomes(plan Plan, states map[int]*reqState) {
	type combo struct {
		s           Scenario
		first, last string
	}
	combos := map[combo]int{}
	explained := map[string]int{}
	for _, q := range plan.Requests {
		st := states[q.Index]
		if st == nil || len(st.first) == 0 {
			r.violate("%s (%s, offer %s): no first result stored", q.ID, q.Scenario, q.OfferID)
			continue
		}
		firsts, finals := outcomeList(st.first), outcomeList(st.final)
		if len(firsts) > 1 {
			r.violate("%s (%s): contradictory first results: %s", q.ID, q.Scenario, strings.Join(firsts, " and "))
		}
		if len(finals) > 1 {
			r.violate("%s (%s): contradictory final results: %s", q.ID, q.Scenario, strings.Join(finals, " and "))
		}
		f := firsts[0]
		g := strings.Join(finals, "+")
		switch {
		case f == "cancelling" && len(finals) == 0 && st.firstData.Location != "":
			r.violate("%s (%s): cancelling result but no final result stored", q.ID, q.Scenario)
		case f != "cancelling" && len(finals) > 0:
			r.violate("%s (%s): final result %s after a first result %s", q.ID, q.Scenario, g, f)
		}
		combos[combo{q.Scenario, f, g}]++
		wantFirst, wantFinal := q.Expected()
		if f == wantFirst && g == wantFinal {
			continue
		}
		var code string
		switch {
		case f == "failed" && st.firstData.Error != nil:
			code = st.firstData.Error.Code
		case g == "failed" && st.finalData.Error != nil:
			code = st.finalData.Error.Code
		}
		switch {
		case q.Scenario == OpGone && f == "cancelling" && g == "failed":
			// the final failure's code (OperationNotFound, follow_timeout) is reported below
		case f == "failed" && q.Scenario != Invalid && transientCode(code):
			explained["first failed "+code]++
		default:
			r.violate("%s (%s): outcomes %s then %q (code %q), want %s then %q", q.ID, q.Scenario, f, g, code, wantFirst, wantFinal)
		}
	}
	var lines []string
	keys := make([]combo, 0, len(combos))
	for c := range combos {
		keys = append(keys, c)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].s != keys[j].s {
			return slices.Index(Scenarios, keys[i].s) < slices.Index(Scenarios, keys[j].s)
		}
		return keys[i].first+keys[i].last < keys[j].first+keys[j].last
	})
	for _, c := range keys {
		last := c.last
		if last == "" {
			last = "(none)"
		}
		lines = append(lines, fmt.Sprintf("  %-8s first %-10s final %-10s %5d", c.s, c.first, last, combos[c]))
	}
	codes := map[string]int{}
	for _, q := range plan.Requests {
		if st := states[q.Index]; st != nil && q.Scenario == OpGone && st.finalData.Error != nil {
			codes[st.finalData.Error.Code]++
		}
	}
	lines = append(lines, fmt.Sprintf("  opgone final failures by code: %v", codes))
	if len(explained) > 0 {
		lines = append(lines, fmt.Sprintf("  failed after transient API faults (allowed): %v", explained))
	}
	r.section("outcomes (scenario, first, final: requests)", lines...)
}

// checkCalls: at most one settling API call per request, except one in flight at a SIGKILL; none
// for invalid requests; none after the request's first result was stored.
func (r *Report) checkCalls(plan Plan, obs Observed, o CheckOptions, byOffer map[string]*Request, states map[int]*reqState) {
	calls := map[int][]emulator.Call{}
	var total, settling, unanswered, retried, strangers int
	for _, c := range obs.Calls {
		total++
		q := byOffer[c.PublisherID+"/"+c.OfferID]
		if q == nil {
			strangers++
			r.violate("API call for offer %s/%s, which no request names", c.PublisherID, c.OfferID)
			continue
		}
		calls[q.Index] = append(calls[q.Index], c)
		switch {
		case c.Status == 0:
			unanswered++
		case definitive(c.Status):
			settling++
		default:
			retried++
		}
	}
	kills := []FaultRecord{}
	for _, f := range obs.Faults {
		if f.Skipped == "" && (f.Kind == KillReplica || f.Kind == KillNATS) {
			kills = append(kills, f)
		}
	}
	explainedByKind := map[Kind]int{}
	var extraLines []string
	var never int
	for _, q := range plan.Requests {
		cs := calls[q.Index]
		sort.Slice(cs, func(i, j int) bool { return cs[i].At.Before(cs[j].At) })
		st := states[q.Index]
		if q.Scenario == Invalid {
			if len(cs) > 0 {
				r.violate("%s: invalid request sent to the API %d times", q.ID, len(cs))
			}
			continue
		}
		if len(cs) == 0 && st != nil && len(st.first) > 0 && st.firstData.StatusCode != 0 {
			never++
		}
		var prev *emulator.Call
		for i := range cs {
			c := &cs[i]
			if st != nil && !st.firstStored.IsZero() && c.At.After(st.firstStored) {
				r.violate("%s (%s): API called at +%s (answered %d), after its first result was stored at +%s",
					q.ID, q.Scenario, since(obs.Start, c.At), c.Status, since(obs.Start, st.firstStored))
			}
			if !definitive(c.Status) {
				continue
			}
			if prev == nil {
				prev = c
				continue
			}
			var by *FaultRecord
			for k := range kills {
				f := &kills[k]
				if !f.Start.Before(prev.At) && f.Start.Sub(prev.At) <= o.InFlight && !f.Start.After(c.At) {
					by = f
					break
				}
			}
			desc := fmt.Sprintf("%s (%s, offer %s): API answered %d at +%s, then %d again at +%s", q.ID, q.Scenario, q.OfferID,
				prev.Status, since(obs.Start, prev.At), c.Status, since(obs.Start, c.At))
			if by != nil {
				explainedByKind[by.Kind]++
				extraLines = append(extraLines, fmt.Sprintf("  %s: in flight at %s (+%s, %s after the first call)",
					desc, by.Kind, since(obs.Start, by.Start), by.Start.Sub(prev.At).Round(time.Millisecond)))
			} else {
				r.violate("%s: a second API call no SIGKILL explains", desc)
			}
			prev = c
		}
	}
	lines := []string{
		fmt.Sprintf("API cancel POSTs: %d: %d settling (2xx, permanent 4xx), %d unanswered (timed out or dropped), %d retried by design (401, 429, 5xx, …), %d for no request",
			total, settling, unanswered, retried, strangers),
		fmt.Sprintf("extra settling calls of requests in flight at a SIGKILL (allowed): %d (%v)", len(extraLines), explainedByKind),
	}
	lines = append(lines, extraLines...)
	if never > 0 {
		lines = append(lines, fmt.Sprintf("requests with an API status in their result but no call recorded: %d", never))
	}
	r.section("API calls", lines...)
}

// checkPolls: at most one poll of an operation per FollowInterval (less the tolerance).
func (r *Report) checkPolls(obs Observed, o CheckOptions, byOffer map[string]*Request, states map[int]*reqState) {
	window := time.Duration(float64(o.FollowInterval) * (1 - o.PollTolerance))
	var total, maxIn, offenders, afterFinal int
	var worst string
	byStatus := map[int]int{}
	var retried401 int
	for _, op := range obs.Operations {
		total += op.PollCount
		sorted := slices.Clone(op.Polls)
		slices.SortFunc(sorted, func(a, b emulator.Poll) int { return a.At.Compare(b.At) })
		var polls []time.Time
		for i, p := range sorted {
			byStatus[p.Status]++
			// A poll answered 401 is retried at once with a fresh token (docs/following.md):
			// the two are one poll.
			if p.Status == 401 && i+1 < len(sorted) && sorted[i+1].At.Sub(p.At) < window {
				retried401++
				continue
			}
			polls = append(polls, p.At)
		}
		opMax := 0
		for i := range polls {
			n := 1
			for j := i + 1; j < len(polls) && polls[j].Sub(polls[i]) < window; j++ {
				n++
			}
			opMax = max(opMax, n)
		}
		q := byOffer[op.PublisherID+"/"+op.OfferID]
		name := op.OfferID
		if q != nil {
			name = q.ID + " (" + string(q.Scenario) + ")"
			if st := states[q.Index]; st != nil && !st.finalStored.IsZero() {
				for _, p := range polls {
					if p.After(st.finalStored.Add(time.Second)) {
						afterFinal++
					}
				}
			}
		}
		if opMax > maxIn {
			maxIn, worst = opMax, name
		}
		if opMax > 1 {
			offenders++
			if offenders <= 20 {
				gaps := make([]string, 0, len(polls))
				for i := 1; i < len(polls); i++ {
					gaps = append(gaps, polls[i].Sub(polls[i-1]).Round(time.Millisecond).String())
				}
				r.violate("%s: operation %s polled %d times within %s (gaps %s)", name, op.ID, opMax, window, strings.Join(gaps, " "))
			}
		}
	}
	if offenders > 20 {
		r.violate("… and %d more operations polled too often", offenders-20)
	}
	r.section("operation polls",
		fmt.Sprintf("%d operations, %d polls, by status answered (0: none, the client gave up): %v; answered 401 and retried at once with a fresh token, counted as one poll with the retry: %d",
			len(obs.Operations), total, byStatus, retried401),
		fmt.Sprintf("most polls of one operation within %s (CPCANCEL_FOLLOW_INTERVAL %s less %.0f%%): %d (%s); operations over 1: %d; polls more than 1s after the final result was stored: %d",
			window, o.FollowInterval, o.PollTolerance*100, maxIn, worst, offenders, afterFinal))
}

// checkLeftovers: nothing pending in the request and follow streams, dead letters exactly the
// planned ones.
func (r *Report) checkLeftovers(plan Plan, obs Observed) {
	var lines []string
	if obs.SettledOK {
		lines = append(lines, fmt.Sprintf("settled %s after the schedule ended", obs.Settled.Round(100*time.Millisecond)))
	} else {
		lines = append(lines, fmt.Sprintf("NOT settled %s after the schedule ended", obs.Settled.Round(100*time.Millisecond)))
	}
	for _, s := range obs.Streams {
		lines = append(lines, fmt.Sprintf("stream %s: %d messages", s.Name, s.Msgs))
		if s.Msgs != 0 {
			r.violate("stream %s still holds %d messages", s.Name, s.Msgs)
		}
	}
	for _, c := range obs.Consumers {
		lines = append(lines, fmt.Sprintf("consumer %s/%s: %d pending, %d awaiting ack", c.Stream, c.Name, c.Pending, c.AckPending))
		if c.Pending != 0 || c.AckPending != 0 {
			r.violate("consumer %s/%s: %d pending, %d awaiting ack", c.Stream, c.Name, c.Pending, c.AckPending)
		}
	}
	want := map[string]int{}
	for _, d := range plan.DeadLetters {
		want[d.Body]++
	}
	got := map[string]int{}
	for _, b := range obs.DeadLetters {
		got[b]++
	}
	for b, n := range got {
		switch {
		case want[b] == 0:
			r.violate("dead letter that is not one of the planned non-CloudEvents: %.120q", b)
		case n > want[b]:
			r.violate("dead letter %q stored %d times", b, n)
		}
	}
	for b := range want {
		if got[b] == 0 {
			r.violate("planned dead letter %q not in the dead-letter stream", b)
		}
	}
	lines = append(lines, fmt.Sprintf("dead letters: %d stored, %d planned", len(obs.DeadLetters), len(plan.DeadLetters)))
	r.section("left over", lines...)
}

// recovery tabulates, per fault, the time from lifting it to the next stored result and until
// the requests it held up had their first results.
func (r *Report) recovery(plan Plan, obs Observed, states map[int]*reqState) {
	stored := make([]time.Time, 0, len(obs.Results))
	for _, res := range obs.Results {
		stored = append(stored, res.Stored)
	}
	slices.SortFunc(stored, func(a, b time.Time) int { return a.Compare(b) })
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "fault\tinjected\tlifted\tnext result after\theld up\tlast of them after\t")
	for _, f := range obs.Faults {
		if f.Skipped != "" || f.End.IsZero() {
			continue
		}
		next := "-"
		if i, _ := slices.BinarySearchFunc(stored, f.End, func(a, t time.Time) int { return a.Compare(t) }); i < len(stored) {
			next = stored[i].Sub(f.End).Round(10 * time.Millisecond).String()
		}
		held := 0
		var last time.Time
		for _, q := range plan.Requests {
			pub, ok := obs.Published[q.Index]
			st := states[q.Index]
			if !ok || st == nil || st.firstStored.IsZero() || !pub.Before(f.End) || !st.firstStored.After(f.Start) {
				continue
			}
			held++
			if st.firstStored.After(last) {
				last = st.firstStored
			}
		}
		drain := "-"
		if held > 0 {
			drain = max(last.Sub(f.End), 0).Round(10 * time.Millisecond).String()
		}
		name := string(f.Kind)
		if f.Kind == KillReplica || f.Kind == TermReplica {
			name += fmt.Sprintf(" %d", f.Target)
		}
		fmt.Fprintf(tw, "%s\t+%s\t+%s\t%s\t%d\t%s\t\n", name, since(obs.Start, f.Start), since(obs.Start, f.End), next, held, drain)
	}
	tw.Flush()
	r.section("recovery (from lifting each fault: next stored result; requests published before it whose first result came after it began, and when the last of them came)",
		strings.TrimRight(b.String(), "\n"))
}
