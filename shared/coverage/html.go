package coverage

import (
	"archive/zip"
	"bytes"
	"fmt"
	"html/template"
	"io"
	"slices"
	"strings"
	"time"
)

// SourceFunc returns the text of a source file named as in the report, or an
// error if it is not available (the server usually has only the ELF).
type SourceFunc func(path string) ([]byte, error)

// WriteHTMLZip writes a self-contained HTML report as a zip: index.html (the
// totals, one row per file saying whether its source text was found, the
// files outside the program's sources apart, or the functions / blocks when
// there are no source lines) and f<N>.html per file (every line with its
// count, branch outcomes and, when src can supply it, the source text). src
// may be nil. Entries are dated at the snapshot (now if it has no time).
func (r *Report) WriteHTMLZip(w io.Writer, src SourceFunc) error {
	at := r.Snapshot.Time
	if at.IsZero() {
		at = time.Now()
	}
	zw := zip.NewWriter(w)
	idx := indexView{Report: r}
	for i, f := range slices.Concat(r.Files, r.OtherFiles) {
		v := fileView{File: f, Report: r, Name: fileName(i)}
		v.Rows, v.HaveSource = rows(f, src)
		if i < len(r.Files) {
			idx.Files = append(idx.Files, v)
		} else {
			idx.OtherFiles = append(idx.OtherFiles, v)
		}
	}
	if err := render(zw, at, "index.html", "index.html", idx); err != nil {
		return err
	}
	for _, v := range slices.Concat(idx.Files, idx.OtherFiles) {
		if err := render(zw, at, v.Name, "file.html", v); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("coverage: writing zip: %w", err)
	}
	return nil
}

// render executes one template into a new zip entry dated at.
func render(zw *zip.Writer, at time.Time, name, tmpl string, data any) error {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, tmpl, data); err != nil {
		return fmt.Errorf("coverage: rendering %s: %w", name, err)
	}
	// Create leaves the date unset, which unzip shows as 1980-00-00.
	fw, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: at})
	if err == nil {
		_, err = fw.Write(buf.Bytes())
	}
	if err != nil {
		return fmt.Errorf("coverage: writing zip: %w", err)
	}
	return nil
}

func fileName(i int) string { return fmt.Sprintf("f%d.html", i) }

// indexView is the index page: the report and its files' pages.
type indexView struct {
	*Report
	Files, OtherFiles []fileView
}

type fileView struct {
	File       FileReport
	Report     *Report
	Name       string
	Rows       []row
	HaveSource bool
}

// row is one source line on a file page.
type row struct {
	Line     int
	Text     string
	Count    uint64
	Class    string // hit, miss or "" (no code)
	Branches string
}

func rows(f FileReport, src SourceFunc) ([]row, bool) {
	var text []string
	if src != nil {
		if b, err := src(f.Path); err == nil {
			text = strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
		}
	}
	counts := map[int]uint64{}
	last := 0
	for _, l := range f.Lines {
		counts[l.Line] = l.Count
		last = max(last, l.Line)
	}
	br := map[int][]string{}
	for _, b := range f.Branches {
		s := "-/-"
		if b.Executed && !b.Undetermined {
			s = fmt.Sprintf("%d/%d", b.Taken, b.NotTaken)
		} else if b.Undetermined {
			s = "?/?"
		}
		br[b.Line] = append(br[b.Line], s)
	}
	n := max(last, len(text))
	out := make([]row, 0, n)
	for ln := 1; ln <= n; ln++ {
		rw := row{Line: ln, Branches: strings.Join(br[ln], " ")}
		if ln <= len(text) {
			rw.Text = text[ln-1]
		}
		if c, ok := counts[ln]; ok {
			rw.Count = c
			rw.Class = "miss"
			if c > 0 {
				rw.Class = "hit"
			}
		} else if text == nil {
			continue // without source only lines with code are worth a row
		}
		out = append(out, rw)
	}
	return out, text != nil
}

func pct(t Tally) string {
	if t.Found == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(t.Hit)/float64(t.Found))
}

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"pct": pct,
	"hex": func(v uint64) string { return fmt.Sprintf("0x%08x", v) },
}).Parse(`
{{define "style"}}<style>
body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}
td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{margin:0}tr.hit td.c{background:#cfc}tr.ran td.c{background:#ffc}tr.miss td.c,tr.miss td.s{background:#fcc}
.note{color:#a40}
</style>{{end}}
{{define "totals"}}<table><tr><th></th><th>hit</th><th>found</th><th></th></tr>
<tr><td>lines</td><td class=n>{{.Lines.Hit}}</td><td class=n>{{.Lines.Found}}</td><td class=n>{{pct .Lines}}</td></tr>
<tr><td>functions</td><td class=n>{{.Functions.Hit}}</td><td class=n>{{.Functions.Found}}</td><td class=n>{{pct .Functions}}</td></tr>
<tr><td>branches</td><td class=n>{{.Branches.Hit}}</td><td class=n>{{.Branches.Found}}</td><td class=n>{{pct .Branches}}</td></tr>
</table>{{end}}
{{define "functions"}}<p>Calls count entries into a function in the window; executed says whether any of its code ran (a task's loop entered before the window opened runs with 0 calls).</p>
<table><tr><th>function</th><th>address</th><th>line</th><th>calls</th><th>executed</th></tr>
{{range .}}<tr class="{{if .Count}}hit{{else if .Executed}}ran{{else}}miss{{end}}"><td>{{.Name}}</td><td>{{hex .Addr}}</td><td class=n>{{if .Line}}{{.Line}}{{end}}</td><td class="n c">{{.Count}}</td><td class=c>{{if .Executed}}yes{{else}}no{{end}}</td></tr>
{{end}}</table>{{end}}
{{define "files"}}<table><tr><th>file</th><th>lines</th><th>functions</th><th>branches</th><th>source text</th></tr>
{{range .}}<tr><td><a href="{{.Name}}">{{.File.Path}}</a></td>{{with .File.Totals}}<td class=n>{{pct .Lines}} ({{.Lines.Hit}}/{{.Lines.Found}})</td><td class=n>{{pct .Functions}} ({{.Functions.Hit}}/{{.Functions.Found}})</td><td class=n>{{pct .Branches}} ({{.Branches.Hit}}/{{.Branches.Found}})</td>{{end}}<td>{{if .HaveSource}}shown{{else}}<span class=note>not available</span>{{end}}</td></tr>
{{end}}</table>{{end}}
{{define "index.html"}}<!doctype html><html><head><meta charset="utf-8"><title>Coverage</title>{{template "style"}}</head><body>
<h1>Coverage</h1>
<p>Level: {{.Level}}. Snapshot: {{.Snapshot.Reason}} #{{.Snapshot.Seq}}{{if not .Snapshot.Time.IsZero}} at {{.Snapshot.Time.Format "2006-01-02 15:04:05 MST"}}{{end}}{{if not .Final}} (not final){{end}}. Branch outcomes: {{.Edges}}.</p>
{{range .Notes}}<p class=note>{{.}}</p>{{end}}
{{template "totals" .Totals}}
{{if .Files}}<h2>Files</h2>{{template "files" .Files}}{{end}}
{{if .OtherFiles}}<h2>Outside the program's sources</h2><p>Toolchain and library code, not in the totals above or in the LCOV.</p>{{template "files" .OtherFiles}}{{end}}
{{if .Functions}}<h2>Functions</h2>{{template "functions" .Functions}}{{end}}
{{if .Blocks}}<h2>Blocks</h2><table><tr><th>start</th><th>instructions</th><th>bytes</th><th>count</th></tr>
{{range .Blocks}}<tr><td>{{hex .Start}}</td><td class=n>{{.Insns}}</td><td class=n>{{.Bytes}}</td><td class=n>{{.Count}}</td></tr>
{{end}}</table>{{end}}
</body></html>{{end}}
{{define "file.html"}}<!doctype html><html><head><meta charset="utf-8"><title>{{.File.Path}}</title>{{template "style"}}</head><body>
<p><a href="index.html">index</a></p><h1>{{.File.Path}}</h1>
{{template "totals" .File.Totals}}
{{if not .HaveSource}}<p class=note>Source text not available: lines with code only.</p>{{end}}
<h2>Lines</h2><p>Branches: taken/not taken per conditional branch; -/- never ran, ?/? ran but undetermined.</p>
<table><tr><th>line</th><th>count</th><th>branches</th><th>source</th></tr>
{{range .Rows}}<tr class="{{.Class}}"><td class=n>{{.Line}}</td><td class="n c">{{if .Class}}{{.Count}}{{end}}</td><td>{{.Branches}}</td><td class=s><pre>{{.Text}}</pre></td></tr>
{{end}}</table>
{{if .File.Functions}}<h2>Functions</h2>{{template "functions" .File.Functions}}{{end}}
</body></html>{{end}}
`))
