package docs_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// repoRoot is the repository's root, relative to this package's directory.
const repoRoot = ".."

// markdownPages are the pages whose links must resolve: README.md and every docs/*.md.
func markdownPages(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	pages = append(pages, filepath.Join(repoRoot, "README.md"))
	if len(pages) < 2 {
		t.Fatalf("found only %v", pages)
	}
	return pages
}

var (
	// inlineLink matches [text](target) and ![alt](target), with an optional "title".
	inlineLink = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	// refDefinition matches a reference definition: [label]: target.
	refDefinition = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$`)
	// codeSpan matches inline code, which holds no links.
	codeSpan = regexp.MustCompile("`+[^`]*`+")
	// scheme marks an absolute link (https:, mailto:, ...), which is not checked.
	scheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
)

// link is one link found on a page.
type link struct {
	line   int
	target string
}

// pageText is a Markdown page's lines outside fenced code blocks, and its links.
type pageText struct {
	prose    []string // lines outside fences ("" for a line inside one, to keep numbering)
	links    []link
	headings []string // heading texts, in order, outside fences
}

func readPage(t *testing.T, path string) pageText {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var p pageText
	fence := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "" {
				fence = ""
			}
			p.prose = append(p.prose, "")
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			p.prose = append(p.prose, "")
			continue
		}
		p.prose = append(p.prose, line)
		if h, ok := strings.CutPrefix(trimmed, "#"); ok && len(trimmed)-len(strings.TrimLeft(trimmed, "#")) <= 6 {
			h = strings.TrimLeft(h, "#")
			if h == "" || h[0] == ' ' {
				p.headings = append(p.headings, strings.TrimRight(strings.TrimSpace(h), "# "))
			}
		}
		if m := refDefinition.FindStringSubmatch(line); m != nil {
			p.links = append(p.links, link{n, m[1]})
			continue
		}
		for _, m := range inlineLink.FindAllStringSubmatch(codeSpan.ReplaceAllString(line, ""), -1) {
			p.links = append(p.links, link{n, m[1]})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if fence != "" {
		t.Errorf("%s: a code fence is never closed", path)
	}
	return p
}

// anchor is the fragment GitHub gives a heading: the text without Markdown (inline code marks,
// emphasis, link targets), lowercased, every character that is not a letter, a digit, a space,
// a hyphen or an underscore removed, and spaces replaced by hyphens.
func anchor(heading string) string {
	heading = inlineLink.ReplaceAllStringFunc(heading, func(s string) string {
		return s[strings.Index(s, "[")+1 : strings.Index(s, "]")]
	})
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors are the fragments a page's headings answer to; a repeated heading gets -1, -2, ...
func anchors(headings []string) map[string]bool {
	seen := map[string]int{}
	out := map[string]bool{}
	for _, h := range headings {
		a := anchor(h)
		if n := seen[a]; n > 0 {
			out[fmt.Sprintf("%s-%d", a, n)] = true
		} else {
			out[a] = true
		}
		seen[a]++
	}
	return out
}

func TestAnchor(t *testing.T) {
	for _, c := range []struct{ heading, want string }{
		{"Guarantees", "guarantees"},
		{"Metrics and health", "metrics-and-health"},
		{"Publishing a cancel request", "publishing-a-cancel-request"},
		{"CpcancelAPIErrorRatioHigh", "cpcancelapierrorratiohigh"},
		{"1. The upstream API", "1-the-upstream-api"},
		{"`CPCANCEL_FOLLOW`: following a 202", "cpcancel_follow-following-a-202"},
		{"Dashboard, alerts, runbook", "dashboard-alerts-runbook"},
		{"The cost of the guarantees (per request)", "the-cost-of-the-guarantees-per-request"},
		{"See [the runbook](docs/runbook.md)", "see-the-runbook"},
	} {
		t.Run(c.heading, func(t *testing.T) {
			if got := anchor(c.heading); got != c.want {
				t.Errorf("anchor(%q) = %q, want %q", c.heading, got, c.want)
			}
		})
	}
	got := anchors([]string{"Example", "Example", "Example"})
	for _, want := range []string{"example", "example-1", "example-2"} {
		if !got[want] {
			t.Errorf("repeated headings: no anchor %q in %v", want, got)
		}
	}
}

// TestLinksResolve checks that every relative link in README.md and docs/*.md names a file or
// folder inside the repository and, with a #fragment, a heading of that page. Absolute links
// (https:, mailto:) are not checked.
func TestLinksResolve(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]map[string]bool{} // absolute path -> anchors
	anchorsOf := func(path string) map[string]bool {
		if a, ok := headings[path]; ok {
			return a
		}
		headings[path] = anchors(readPage(t, path).headings)
		return headings[path]
	}
	for _, page := range markdownPages(t) {
		abs, err := filepath.Abs(page)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := filepath.Rel(root, abs)
		t.Run(name, func(t *testing.T) {
			p := readPage(t, abs)
			for _, l := range p.links {
				if l.target == "" || scheme.MatchString(l.target) {
					continue
				}
				path, frag, _ := strings.Cut(l.target, "#")
				target := abs
				if path != "" {
					target = filepath.Join(filepath.Dir(abs), filepath.FromSlash(path))
				}
				rel, err := filepath.Rel(root, target)
				if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
					t.Errorf("%s:%d: %s points outside the repository", name, l.line, l.target)
					continue
				}
				info, err := os.Stat(target)
				if err != nil {
					t.Errorf("%s:%d: %s: no such file in the repository", name, l.line, l.target)
					continue
				}
				if frag == "" {
					continue
				}
				if info.IsDir() || !strings.HasSuffix(target, ".md") {
					t.Errorf("%s:%d: %s: a #fragment only on a Markdown page", name, l.line, l.target)
					continue
				}
				if !anchorsOf(target)[frag] {
					a := anchorsOf(target)
					known := make([]string, 0, len(a))
					for k := range a {
						known = append(known, k)
					}
					slices.Sort(known)
					t.Errorf("%s:%d: %s: %s has no heading #%s (it has %s)", name, l.line, l.target, rel, frag, strings.Join(known, " "))
				}
			}
		})
	}
}

// TestNoPathsOutsideTheRepository checks that no page, in a link or in its text, reaches out of
// the repository into the workspace folder beside it.
func TestNoPathsOutsideTheRepository(t *testing.T) {
	outside := "../" + "shared" // in two parts, so that this file does not match itself
	for _, page := range markdownPages(t) {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.ToSlash(filepath.Join("docs", page))
		if filepath.Dir(page) != "." {
			name = filepath.Base(page)
		}
		for n, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, outside) {
				t.Errorf("%s:%d: points outside the repository: %s", name, n+1, strings.TrimSpace(line))
			}
		}
	}
}

// TestREADMEOpensWithTheTwoCommands checks that the first commands a reader meets are the ones
// that run everything: the service in -dev mode, and every test.
func TestREADMEOpensWithTheTwoCommands(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```")
	if !ok {
		t.Fatal("README.md has no code block")
	}
	block, _, _ := strings.Cut(rest, "```")
	var commands []string
	for _, line := range strings.Split(block, "\n")[1:] {
		if cmd, _, _ := strings.Cut(line, "#"); strings.TrimSpace(cmd) != "" {
			commands = append(commands, strings.TrimSpace(cmd))
		}
	}
	want := []string{"go run ./cmd/consumer -dev", "go test -race ./..."}
	if !slices.Equal(commands, want) {
		t.Errorf("README.md's first code block runs %q, want %q", commands, want)
	}
}

// TestREADMEGoPublisherIsTheTestedOne checks that the Go publisher shown in README.md is, byte
// for byte, publishCancel in internal/service/readme_test.go, which runs it against the service.
func TestREADMEGoPublisherIsTheTestedOne(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "internal", "service", "readme_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	_, fn, ok := strings.Cut(string(src), "\nfunc publishCancel(")
	if !ok {
		t.Fatal("internal/service/readme_test.go: no func publishCancel")
	}
	fn, _, ok = strings.Cut(fn, "\n}\n")
	if !ok {
		t.Fatal("internal/service/readme_test.go: publishCancel does not end")
	}
	fn = "func publishCancel(" + fn + "\n}\n"
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```go\n"+fn+"```\n") {
		t.Errorf("README.md does not show publishCancel of internal/service/readme_test.go as a go block, byte for byte:\n%s", fn)
	}
}
