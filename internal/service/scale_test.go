//go:build scale

package service_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cpcancel/cpcancel/internal/cancelevent"
	"github.com/cpcancel/cpcancel/internal/emulator"
	"github.com/cpcancel/cpcancel/internal/natsce"
	"github.com/cpcancel/cpcancel/internal/natstest"
	"github.com/cpcancel/cpcancel/internal/servicetest"
)

// TestScaleOut runs three cpcancel processes on one durable consumer of a three-node JetStream
// cluster, the streams and the idempotency bucket replicated three times. With thousands of
// requests under way it shuts one NATS node down, then SIGKILLs one cpcancel: every request still
// ends with exactly one result, and the API never sees two calls for one offer at the same time.
// It reports throughput and how long each failure held work up.
//
// Tagged "scale": CI runs it (go test -tags scale -run TestScaleOut); a quick go test does not.
func TestScaleOut(t *testing.T) {
	const (
		requests    = 3000
		resendEvery = 10 // every tenth request is sent twice at once: two deliveries race for it
		instances   = 3
		concurrency = 16
		latency     = 15 * time.Millisecond
	)
	cluster := natstest.StartCluster(t, 3)
	emu := emulator.New(emulator.Options{Token: testToken, Latency: latency})
	api := newAPIWatch(emu)
	hs := httptest.NewServer(api)
	t.Cleanup(hs.Close)

	// Three instances started at once, as a Deployment with three replicas would: each provisions
	// the same streams, consumer and bucket.
	children := make([]*child, instances)
	addrs := make([]string, instances)
	for i := range children {
		addrs[i] = servicetest.FreeAddr(t)
		children[i] = startChild(t, map[string]string{
			"CPCANCEL_NATS_URL":              cluster.ClientURLs(),
			"CPCANCEL_REPLICAS":              "3",
			"CPCANCEL_CLOUDPARTNER_BASE_URL": hs.URL,
			"CPCANCEL_CLOUDPARTNER_TOKEN":    testToken,
			"CPCANCEL_HTTP_ADDR":             addrs[i],
			"CPCANCEL_CONCURRENCY":           strconv.Itoa(concurrency),
			"CPCANCEL_HTTP_TIMEOUT":          "2s", // lease 24s, under AckWait (30s)
			"CPCANCEL_SHUTDOWN_TIMEOUT":      "12s",
			"CPCANCEL_LOG_LEVEL":             "warn",
		})
	}
	waitReady(t, addrs, 60*time.Second)
	_, probe := cluster.Nodes[0].Connect(t)
	waitPulling(t, probe, instances, 15*time.Second)

	// The node to shut down: the request consumer's leader when a cpcancel instance is connected
	// to it, else the node most instances are connected to, so that both JetStream and cpcancel
	// have to fail over.
	roles := nodeRoles(t, cluster, probe)
	victim := slices.MaxFunc(cluster.Nodes, func(a, b *natstest.Server) int {
		return roles[a.Name()].score() - roles[b.Name()].score()
	})
	var observer *natstest.Server // a node that stays up, so that our own view never fails over
	for _, n := range cluster.Nodes {
		if n != victim {
			observer = n
			break
		}
	}
	_, js := observer.Connect(t)
	st := &stack{js: js, emu: emu, emuURL: hs.URL}
	progress := watchProgress(t, js, "CPCANCEL_RESULTS")

	start := time.Now()
	offers := publishAsync(t, js, "scale", requests, resendEvery)
	published := time.Since(start)

	waitCount(t, st, "CPCANCEL_RESULTS", requests/4, 60*time.Second)
	beforeKill := progress.count()
	victimRoles := roles[victim.Name()]
	victim.Shutdown()
	nodeKilled := time.Now()
	steady := float64(beforeKill) / nodeKilled.Sub(start).Seconds()
	reconnected := waitClients(t, cluster, instances, 30*time.Second).Sub(nodeKilled)
	reelected := waitLeaders(t, cluster, js, victimRoles.leads, victim.Name(), 30*time.Second).Sub(nodeKilled)
	waitReady(t, addrs, 30*time.Second)

	waitCount(t, st, "CPCANCEL_RESULTS", requests/2, 60*time.Second)
	killedResults := scrapeResults(t, addrs[0])
	if err := children[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	children[0].cmd.Wait()
	instanceKilled := time.Now()
	if n := progress.count(); n >= requests {
		t.Fatalf("all %d results were stored before the instance was killed: nothing was in flight", n)
	}

	// The killed instance's requests come back after AckWait (30s); its leases (19s) are gone by then.
	waitCount(t, st, "CPCANCEL_RESULTS", requests, 60*time.Second)
	allStored := time.Now()
	// Every message settled, so nothing can still add a result.
	st.waitMsgs(t, "CPCANCEL_REQUESTS", 45*time.Second, "none", func(n uint64) bool { return n == 0 })
	progress.stop()

	results := byRequest(t, st.waitStream(t, "CPCANCEL_RESULTS", requests, 10*time.Second))
	var calledTwice int
	for _, o := range offers {
		r, ok := results[o]
		switch {
		case !ok:
			t.Errorf("no result for %s", o)
		case r.ev.Type() != cancelevent.Cancelling.Type() || r.data.StatusCode != http.StatusAccepted:
			t.Errorf("%s: result %s, status %d, error %+v; want %s after a 202", o, r.ev.Type(), r.data.StatusCode,
				r.data.Error, cancelevent.Cancelling.Type())
		}
		switch n := api.calls(o); {
		case n == 0:
			t.Errorf("%s: API never called", o)
		case n > 1:
			calledTwice++
		}
	}
	for _, o := range api.overlapping() {
		t.Errorf("%s: a second API call started while the first was still in flight", o)
	}
	// Only calls in flight at the SIGKILL, or answered while the node went away and never
	// recorded, may be made again.
	if limit := 2 * concurrency; calledTwice > limit {
		t.Errorf("%d requests sent to the API twice, want at most %d", calledTwice, limit)
	}
	// Every instance took its share: the killed one had work to lose.
	stored := []int{killedResults}
	for _, addr := range addrs[1:] {
		stored = append(stored, scrapeResults(t, addr))
	}
	for i, n := range stored {
		if n == 0 {
			t.Errorf("cpcancel instance %d stored no results", i+1)
		}
	}

	total := allStored.Sub(start)
	t.Logf("cluster: 3 nodes, streams and KV bucket R3; %d cpcancel processes × concurrency %d on one durable; API latency %s",
		instances, concurrency, latency)
	t.Logf("%d requests (%d of them sent twice) published in %s; all results stored after %s: %.0f requests/s overall, %.0f/s steady (before the first kill); peak API calls in flight %d",
		requests, requests/resendEvery, published.Round(time.Millisecond), total.Round(time.Millisecond), float64(requests)/total.Seconds(),
		steady, api.peak())
	t.Logf("NATS node %s shut down at %d results (it had %s): instances all reconnected to the other nodes after %s, its leaderships re-elected after %s, results paused at most %s",
		victim.Name(), beforeKill, victimRoles, reconnected.Round(time.Millisecond), reelected.Round(time.Millisecond),
		progress.longestPause(nodeKilled, instanceKilled).Round(time.Millisecond))
	t.Logf("cpcancel instance 1 SIGKILLed at %d results (%d stored by it): all results stored %s after the kill (its unfinished requests wait for AckWait, 30s)",
		progress.countAt(instanceKilled), killedResults, allStored.Sub(instanceKilled).Round(time.Millisecond))
	t.Logf("results stored per instance: %v (the first until its kill); %d of %d requests sent to the API twice, one after the other; none at the same time: %v",
		stored, calledTwice, requests, len(api.overlapping()) == 0)
}

// apiWatch stands in front of the emulator and watches cancel calls per offer: how many, and
// whether one started while another for the same offer was still being answered.
type apiWatch struct {
	next http.Handler

	mu         sync.Mutex
	inFlight   map[string]int
	total      map[string]int
	overlaps   []string
	now, maxIn int
}

func newAPIWatch(next http.Handler) *apiWatch {
	return &apiWatch{next: next, inFlight: map[string]int{}, total: map[string]int{}}
}

func (a *apiWatch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// /api/publishers/{publisher}/offers/{offer}/cancel
	seg := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(seg) != 6 || seg[5] != "cancel" {
		a.next.ServeHTTP(w, r)
		return
	}
	offer := seg[4]
	a.mu.Lock()
	if a.inFlight[offer] > 0 {
		a.overlaps = append(a.overlaps, offer)
	}
	a.inFlight[offer]++
	a.total[offer]++
	a.now++
	a.maxIn = max(a.maxIn, a.now)
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.inFlight[offer]--
		a.now--
		a.mu.Unlock()
	}()
	a.next.ServeHTTP(w, r)
}

func (a *apiWatch) calls(offer string) int { a.mu.Lock(); defer a.mu.Unlock(); return a.total[offer] }
func (a *apiWatch) peak() int              { a.mu.Lock(); defer a.mu.Unlock(); return a.maxIn }
func (a *apiWatch) overlapping() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.overlaps)
}

// waitReady waits until every address answers /readyz with 200.
func waitReady(t *testing.T, addrs []string, timeout time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for _, addr := range addrs {
		for {
			resp, err := client.Get("http://" + addr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("cpcancel on %s not ready after %s", addr, timeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// scrapeResults reads the results stored by the instance serving addr, all outcomes together.
func scrapeResults(t *testing.T, addr string) int {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var n float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if name, value, ok := strings.Cut(sc.Text(), " "); ok && strings.HasPrefix(name, "cpcancel_results_total{") {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("metrics of %s: %q: %v", addr, sc.Text(), err)
			}
			n += v
		}
	}
	return int(n)
}

// publishAsync publishes one request per offer, every resendEvery-th one twice in a row (a
// re-sent request: same source and id), without waiting for each acknowledgement; then it waits
// for them all, and returns the offers (also the request ids).
func publishAsync(t *testing.T, js jetstream.JetStream, prefix string, n, resendEvery int) []string {
	t.Helper()
	offers := make([]string, n)
	var acks []jetstream.PubAckFuture
	for i := range n {
		offers[i] = fmt.Sprintf("%s-%d", prefix, i)
		hdr, body, err := natsce.Encode(context.Background(), request(t, "/test", offers[i], "contoso", offers[i]), natsce.Binary)
		if err != nil {
			t.Fatal(err)
		}
		sends := 1
		if i%resendEvery == 0 {
			sends = 2
		}
		for range sends {
			ack, err := js.PublishMsgAsync(&nats.Msg{Subject: "cloudpartner.cancel.requests", Header: hdr, Data: body})
			if err != nil {
				t.Fatalf("publish %s: %v", offers[i], err)
			}
			acks = append(acks, ack)
		}
	}
	timeout := time.After(60 * time.Second)
	for _, ack := range acks {
		select {
		case <-ack.Ok():
		case err := <-ack.Err():
			t.Fatalf("publish %s: %v", ack.Msg().Header.Get("ce-id"), err)
		case <-timeout:
			t.Fatalf("publish %s: no acknowledgement after 60s", ack.Msg().Header.Get("ce-id"))
		}
	}
	return offers
}

// roles is what one node does for cpcancel.
type roles struct {
	clients int      // cpcancel connections
	leads   []string // JetStream groups it leads: "meta", streams, "consumer"
}

func (r roles) String() string {
	leads := "no leadership"
	if len(r.leads) > 0 {
		leads = "leader of " + strings.Join(r.leads, ", ")
	}
	return fmt.Sprintf("%d cpcancel connection(s), %s", r.clients, leads)
}

// score ranks nodes to shut down: the consumer's leader with a cpcancel connection first, then by
// connections, then by leaderships.
func (r roles) score() int {
	s := 100*r.clients + len(r.leads)
	if r.clients > 0 && slices.Contains(r.leads, "consumer") {
		s += 10000
	}
	return s
}

// groups are cpcancel's replicated JetStream groups besides the meta group; "consumer" is the
// durable on the request stream.
var groups = []string{"CPCANCEL_REQUESTS", "CPCANCEL_RESULTS", "CPCANCEL_DEADLETTER", "KV_CPCANCEL_IDEMPOTENCY", "consumer"}

// leaderOf names the node leading group, "" while none does.
func leaderOf(ctx context.Context, c *natstest.Cluster, js jetstream.JetStream, group string) (string, error) {
	var info *jetstream.ClusterInfo
	switch group {
	case "meta":
		if l := c.Leader(); l != nil {
			return l.Name(), nil
		}
		return "", nil
	case "consumer":
		cons, err := js.Consumer(ctx, "CPCANCEL_REQUESTS", "cpcancel")
		if err != nil {
			return "", err
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			return "", err
		}
		info = ci.Cluster
	default:
		s, err := js.Stream(ctx, group)
		if err != nil {
			return "", err
		}
		si, err := s.Info(ctx)
		if err != nil {
			return "", err
		}
		info = si.Cluster
	}
	if info == nil {
		return "", nil
	}
	return info.Leader, nil
}

// nodeRoles says, per node name, how many cpcancel instances are connected to it and what it leads.
func nodeRoles(t *testing.T, c *natstest.Cluster, js jetstream.JetStream) map[string]*roles {
	t.Helper()
	m := map[string]*roles{}
	for _, n := range c.Nodes {
		m[n.Name()] = &roles{clients: cpcancelClients(t, n)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, g := range append([]string{"meta"}, groups...) {
		leader, err := leaderOf(ctx, c, js, g)
		if err != nil {
			t.Fatalf("leader of %s: %v", g, err)
		}
		if r := m[leader]; r != nil {
			r.leads = append(r.leads, g)
		}
	}
	return m
}

func cpcancelClients(t *testing.T, n *natstest.Server) int {
	t.Helper()
	cz, err := n.Connz(&server.ConnzOptions{})
	if err != nil {
		t.Fatalf("connz of %s: %v", n.Name(), err)
	}
	count := 0
	for _, ci := range cz.Conns {
		if ci.Name == "cpcancel" {
			count++
		}
	}
	return count
}

// waitClients waits until the running nodes hold want cpcancel connections, and says when.
func waitClients(t *testing.T, c *natstest.Cluster, want int, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		have := 0
		for _, n := range c.Nodes {
			if n.Running() {
				have += cpcancelClients(t, n)
			}
		}
		if have == want {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d cpcancel connections on the running nodes after %s, want %d", have, timeout, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLeaders waits until each group has a leader other than gone, and says when.
func waitLeaders(t *testing.T, c *natstest.Cluster, js jetstream.JetStream, groups []string, gone string, timeout time.Duration) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, g := range groups {
		for {
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			leader, err := leaderOf(rctx, c, js, g)
			rcancel()
			if err == nil && leader != "" && leader != gone {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s without a new leader %s after %s shut down (last error %v)", g, timeout, gone, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return time.Now()
}

// progress samples the message count of a stream, to tell when it grew and when it paused.
type progress struct {
	mu      sync.Mutex
	samples []sample
	done    chan struct{}
	stopped chan struct{}
}

type sample struct {
	at time.Time
	n  uint64
}

func watchProgress(t *testing.T, js jetstream.JetStream, stream string) *progress {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	p := &progress{done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(p.stopped)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			info, err := s.Info(ctx)
			cancel()
			if err == nil {
				p.mu.Lock()
				p.samples = append(p.samples, sample{time.Now(), info.State.Msgs})
				p.mu.Unlock()
			}
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *progress) stop() {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	<-p.stopped
}

func (p *progress) count() uint64 { return p.countAt(time.Now()) }

// countAt is the last count sampled at or before t.
func (p *progress) countAt(t time.Time) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.countBefore(t)
}

// longestPause is the longest time within [from, to] during which the count did not grow.
func (p *progress) longestPause(from, to time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var longest time.Duration
	last, lastN := from, p.countBefore(from)
	for _, s := range p.samples {
		if s.at.Before(from) || s.at.After(to) {
			continue
		}
		if s.n > lastN {
			longest = max(longest, s.at.Sub(last))
			last, lastN = s.at, s.n
		}
	}
	return max(longest, to.Sub(last))
}

func (p *progress) countBefore(t time.Time) uint64 {
	var n uint64
	for _, s := range p.samples {
		if s.at.After(t) {
			break
		}
		n = s.n
	}
	return n
}
