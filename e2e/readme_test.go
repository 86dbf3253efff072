package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestReadmeWalkthrough executes the README's curl walkthrough verbatim
// against a fresh standalone server, through a proxy that checks each of
// its requests and answers against the OpenAPI document.
func TestReadmeWalkthrough(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- walkthrough:start -->")
	block, _, ok2 := strings.Cut(rest, "<!-- walkthrough:end -->")
	if !ok || !ok2 {
		t.Fatal("README has no walkthrough markers")
	}
	script := strings.TrimSpace(block)
	script = strings.TrimPrefix(script, "```sh")
	script = strings.TrimSuffix(script, "```")

	pl, v := validating(t, startStandalone(t))
	fw, _ := filepath.Abs(firmware(t, "netduino2", "fw.elf"))
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "BASE="+pl.base, "FW="+fw, "MS_API_KEY="+apiKey)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walkthrough failed: %v\n%s", err, out)
	}
	for _, want := range []string{"netduino2\n", "MS-TEST-FW netduino2 ready", "running\n", "count=", "stopped\n", "204\n", "401\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("walkthrough output lacks %q:\n%s", want, out)
		}
	}
	v.report(t)
}

// TestReadmeLinks checks that every relative link and #anchor in README.md
// and docs/*.md resolves, since moving text between those files silently
// breaks the links that pointed at it, and that README.md links every docs
// page, so none is unreachable from the front page.
func TestReadmeLinks(t *testing.T) {
	docs, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) == 0 {
		t.Fatal("no docs/*.md found")
	}
	anchors := map[string]map[string]bool{} // cleaned path -> anchors, read on demand
	anchorsOf := func(path string) map[string]bool {
		if a, ok := anchors[path]; ok {
			return a
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		a := map[string]bool{}
		seen := map[string]int{}
		for _, h := range markdownHeadings(string(b)) {
			slug := headingAnchor(h)
			// GitHub numbers repeated headings: x, x-1, x-2.
			if n := seen[slug]; n > 0 {
				a[slug+"-"+strconv.Itoa(n)] = true
			} else {
				a[slug] = true
			}
			seen[slug]++
		}
		anchors[path] = a
		return a
	}
	linked := map[string]bool{}
	for _, file := range append([]string{"../README.md"}, docs...) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, link := range markdownLinks(string(b)) {
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			target, anchor, _ := strings.Cut(link, "#")
			path := filepath.Clean(file)
			if target != "" {
				path = filepath.Join(filepath.Dir(file), target)
				if _, err := os.Stat(path); err != nil {
					t.Errorf("%s: link %q: %v", file, link, err)
					continue
				}
			}
			if file == "../README.md" {
				linked[path] = true
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(path, ".md") {
				t.Errorf("%s: link %q has an anchor into a file that is not markdown", file, link)
				continue
			}
			if !anchorsOf(path)[anchor] {
				t.Errorf("%s: link %q: no heading in %s has the anchor #%s", file, link, path, anchor)
			}
		}
	}
	for _, d := range docs {
		if !linked[filepath.Clean(d)] {
			t.Errorf("README.md does not link %s", d)
		}
	}
}

// TestHeadingAnchor pins the GitHub anchor rule TestReadmeLinks relies on.
func TestHeadingAnchor(t *testing.T) {
	for heading, want := range map[string]string{
		"Object-upload triggers and CI events": "object-upload-triggers-and-ci-events",
		"QEMU 7.2 quirks":                      "qemu-72-quirks",
		"`make run`: one process":              "make-run-one-process",
		"See [the API](docs/api.md)":           "see-the-api",
	} {
		if got := headingAnchor(heading); got != want {
			t.Errorf("headingAnchor(%q) = %q, want %q", heading, got, want)
		}
	}
	md := "# Top\n```sh\n# not a heading\n```\n## Next [x](y.md) and `z`\n"
	if got := markdownHeadings(md); !slices.Equal(got, []string{"Top", "Next [x](y.md) and `z`"}) {
		t.Errorf("markdownHeadings = %q", got)
	}
	if got := markdownLinks(md + "see [`a`](b.md#c), not `[d](e)`\n"); !slices.Equal(got, []string{"y.md", "b.md#c"}) {
		t.Errorf("markdownLinks = %q", got)
	}
}

var (
	mdLink     = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
	mdCodeSpan = regexp.MustCompile("`[^`\n]*`")
	// GitHub keeps letters, digits, spaces, hyphens and underscores.
	anchorDrop = regexp.MustCompile(`[^\p{L}\p{N} _-]`)
)

// markdownProse returns the lines of md outside fenced code blocks.
func markdownProse(md string) []string {
	var out []string
	fenced := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			out = append(out, line)
		}
	}
	return out
}

func markdownHeadings(md string) []string {
	var out []string
	for _, line := range markdownProse(md) {
		if text, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " "); ok && strings.HasPrefix(line, "#") {
			out = append(out, strings.TrimSpace(text))
		}
	}
	return out
}

// markdownLinks returns the targets of the inline links outside code.
func markdownLinks(md string) []string {
	var out []string
	for _, line := range markdownProse(md) {
		for _, m := range mdLink.FindAllStringSubmatch(mdCodeSpan.ReplaceAllString(line, ""), -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// headingAnchor is the anchor GitHub gives a heading: link text kept,
// lower case, punctuation dropped, spaces to hyphens.
func headingAnchor(heading string) string {
	heading = mdLink.ReplaceAllStringFunc(heading, func(l string) string {
		return l[1:strings.Index(l, "](")]
	})
	s := anchorDrop.ReplaceAllString(strings.ToLower(heading), "")
	return strings.ReplaceAll(s, " ", "-")
}
