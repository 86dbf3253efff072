package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/machineserver/machineserver/shared/model"
	"github.com/machineserver/machineserver/shared/runnerapi"
)

// TestUISystems drives the web UI's systems pages in headless chromium
// against the real standalone platform: create a system from its JSON spec
// (and see bad specs refused with the API's message), power it, follow
// each node to its session page, watch the traffic on a UART link both
// ways, put faults on it from the form and from elsewhere, snapshot,
// restore and fork it, read an Ethernet link's frames and a virtual-time
// system's clock, and delete systems from the page and from the list.
func TestUISystems(t *testing.T) {
	pl := startStandalone(t)
	progs := map[string]string{}
	for _, fw := range []string{"uartping.elf", "uartpong.elf", "ethping.elf", "ethpong.elf", "vclock.elf"} {
		progs[fw] = uploadELF(t, pl, "mps2-an385", fw)
	}
	b := newBrowser(t, pl.base)
	b.signIn()
	eval[bool](b, "mark the page", `window.noReload = true`)
	eval[bool](b, "accept confirmations", `(window.confirm = () => true, true)`)

	t.Run("uart", func(t *testing.T) { uiUARTSystem(t, pl, b.on(t), progs) })
	t.Run("ethernet", func(t *testing.T) { uiEthernetSystem(t, pl, b.on(t), progs) })
	t.Run("virtual-time", func(t *testing.T) { uiVirtualSystem(t, pl, b.on(t), progs) })
	if !eval[bool](b, "the page was not reloaded", `window.noReload === true`) {
		t.Fatal("the page was reloaded during the test")
	}
}

// setSpec puts a system spec in the create form's box, as a paste would.
func (b *browser) setSpec(spec string) {
	b.t.Helper()
	b.do("set the spec", chromedp.WaitVisible(chromedp.CSS("#system-spec")),
		chromedp.Evaluate[chromedp.Void](`document.querySelector('#system-spec').value = `+jsString(spec)))
}

// currentSystem is the id in the system page's URL.
func (b *browser) currentSystem() string {
	b.t.Helper()
	b.until("a system page", `/^#\/systems\/[0-9a-f]+$/.test(location.hash)`)
	return strings.TrimPrefix(eval[string](b, "location", `location.hash`), "#/systems/")
}

func mustJSON(t testing.TB, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// errorToast waits for an error toast that says want, and clears toasts.
func (b *browser) errorToast(what, want string) {
	b.t.Helper()
	b.until(what, `[...document.querySelectorAll('.toast.error')].some(e => e.textContent.includes(`+jsString(want)+`))`)
	b.do("clear toasts", chromedp.Evaluate[chromedp.Void](`document.getElementById('toasts').replaceChildren()`))
}

func uiUARTSystem(t *testing.T, pl *platform, b *browser, progs map[string]string) {
	b.click("systems page", `#nav a[data-nav="systems"]`)
	b.until("the systems table", `document.querySelector('#systems-table')`)

	// The form starts with an example to edit: a spec of stored programs.
	b.until("the example spec", `document.querySelector('#system-spec').value.includes('mps2-an385')`)
	var ex model.SystemSpec
	if err := json.Unmarshal([]byte(eval[string](b, "example", `document.querySelector('#system-spec').value`)), &ex); err != nil {
		t.Fatalf("the example spec is not JSON: %v", err)
	}
	if len(ex.Nodes) != 2 || len(ex.Links) != 1 || ex.Nodes[0].ProgramID == "" || ex.Nodes[0].ProgramID == "PROGRAM_ID" {
		t.Fatalf("example spec: %+v", ex)
	}

	// Refusals are shown as the other pages show them: the message, in a
	// toast.
	b.setSpec(`{"name": "x",`)
	b.click("create from bad JSON", "#system-create")
	b.errorToast("bad JSON is refused", "not JSON")
	node := func(name, prog string) map[string]any {
		return map[string]any{"name": name, "board_config": map[string]string{"board": "mps2-an385"}, "program_id": prog}
	}
	nodes := []any{node("gw", progs["uartping.elf"]), node("sensor", progs["uartpong.elf"])}
	b.setSpec(mustJSON(t, map[string]any{"name": "ui-pair", "nodes": nodes,
		"links": []any{map[string]any{"type": "uart", "ends": []string{"gw:uart1", "nope:uart1"}}}}))
	b.click("create a bad system", "#system-create")
	b.errorToast("the API's refusal", "not node:port of a node")

	b.setSpec(mustJSON(t, map[string]any{"name": "ui-pair", "nodes": nodes,
		"links": []any{map[string]any{"type": "uart", "ends": []string{"gw:uart1", "sensor:uart1"}}}}))
	b.click("create the system", "#system-create")
	id := b.currentSystem()
	base := "/api/v1/systems/" + id
	var sys model.System
	pl.must(t, 200, "GET", base, nil, &sys)
	if sys.Name != "ui-pair" || len(sys.Nodes) != 2 {
		t.Fatalf("system from the form: %+v", sys)
	}
	gw, sensor := sys.Nodes[0].SessionID, sys.Nodes[1].SessionID
	state := `document.querySelector('#system-state [data-state]')?.dataset.state`
	b.until("the system is created", state+` === 'created'`)
	// Each node links to its session's page.
	hrefs := eval[[]string](b, "node links", `[...document.querySelectorAll('#system-nodes tbody tr')].map(r => r.dataset.node + '=' + r.querySelector('a.node-link').getAttribute('href'))`)
	if strings.Join(hrefs, ",") != "gw=#/sessions/"+gw+",sensor=#/sessions/"+sensor {
		t.Fatalf("node links %v", hrefs)
	}

	b.click("power on", "#system-poweron")
	b.until("the system runs", state+` === 'running'`)
	b.until("power on is disabled while it runs", `document.querySelector('#system-poweron').disabled && !document.querySelector('#system-poweroff').disabled`)
	b.until("both nodes run", `[...document.querySelectorAll('#system-nodes tbody tr [data-state]')].filter(e => e.dataset.state === 'running').length === 2`)

	// The link's traffic, both ways, each way by its sender.
	link := `document.querySelector('.card.link[data-link="link0"]')`
	recs := func(from string) string {
		return `[...` + link + `.querySelectorAll('.rec[data-from="` + from + `"]')]`
	}
	b.until("gw's pings on the link", recs("gw")+`.some(r => r.classList.contains('dir-a') && r.textContent.includes('PING'))`)
	b.until("sensor's pongs on the link", recs("sensor")+`.some(r => r.classList.contains('dir-b') && r.textContent.includes('PONG'))`)
	counter := func(from, k string) string {
		return `Number(` + link + `.querySelector('.link-counters tr[data-from="` + from + `"] [data-k="` + k + `"]')?.textContent || 0)`
	}
	b.until("bytes delivered both ways", counter("gw:uart1", "delivered")+` > 0 && `+counter("sensor:uart1", "delivered")+` > 0`)
	b.shot("10-system")

	// Faults from the form: down drops everything.
	field := func(name string) string { return `.card.link[data-link="link0"] form.faults [name="` + name + `"]` }
	apply := `.card.link[data-link="link0"] button[data-action="faults"]`
	b.click("link down", field("down"))
	b.click("apply", apply)
	b.until("the card shows the link down", link+`.dataset.down === 'true'`)
	type linkStatus struct {
		Link model.SystemLink `json:"link"`
		UART *runnerapi.Link  `json:"uart"`
	}
	// Each read starts from zero: faults leave out what is clean, so a
	// value decoded over an older one would keep the older faults.
	var ls linkStatus
	pl.must(t, 200, "GET", base+"/links/link0", nil, &ls)
	if !ls.Link.Faults.Down || ls.UART == nil || !ls.UART.Faults.Down {
		t.Fatalf("after down from the form: %+v", ls)
	}
	b.until("bytes dropped", counter("gw:uart1", "dropped")+` > 0`)
	b.until("the down records", link+`.querySelector('.rec .rec-flag')?.textContent === 'down'`)

	// A bad delay is refused with the API's message, and changes nothing.
	b.fill(field("delay"), "forever")
	b.click("apply a bad delay", apply)
	b.errorToast("the bad delay's refusal", "faults.delay")
	ls = linkStatus{}
	pl.must(t, 200, "GET", base+"/links/link0", nil, &ls)
	if !ls.Link.Faults.Down || ls.Link.Faults.Delay != "" {
		t.Fatalf("faults after a refused change: %+v", ls.Link.Faults)
	}
	b.click("link up", field("down"))
	b.until("the box is unchecked", `!document.querySelector(`+jsString(field("down"))+`).checked`)
	b.fill(field("delay"), "2ms")
	b.fill(field("loss"), "0.25")
	b.click("apply", apply)
	b.until("the card shows the link up", link+`.dataset.down === 'false'`)
	ls = linkStatus{}
	pl.must(t, 200, "GET", base+"/links/link0", nil, &ls)
	if f := ls.Link.Faults; f.Down || f.Delay != "2ms" || f.Loss != 0.25 || f.Corrupt != 0 {
		t.Fatalf("faults from the form: %+v", f)
	}

	// Faults changed elsewhere show without a reload.
	pl.must(t, 200, "POST", base+"/links/link0", map[string]any{"corrupt": 0.5}, nil)
	b.until("the form shows faults set elsewhere", `document.querySelector(`+jsString(field("corrupt"))+`).value === '0.5' && document.querySelector(`+jsString(field("loss"))+`).value === ''`)
	pl.must(t, 200, "POST", base+"/links/link0", map[string]any{}, nil)
	b.until("the form shows a clean link", `document.querySelector(`+jsString(field("corrupt"))+`).value === ''`)

	// Snapshot with the link clean, put it down, restore: the link comes
	// back clean (a system snapshot keeps its links' faults) and carries
	// traffic again, numbered anew.
	b.fill("#system-snapshot-name", "ui-snap")
	b.click("take a system snapshot", "#system-snapshot-take")
	b.until("the snapshot is listed", `document.querySelectorAll('#system-snapshots-table tbody tr[data-id]').length === 1`)
	snap := eval[string](b, "snapshot id", `document.querySelector('#system-snapshots-table tbody tr[data-id]').dataset.id`)
	pl.must(t, 200, "POST", base+"/links/link0", map[string]any{"down": true}, nil)
	b.until("the card shows the link down", link+`.dataset.down === 'true'`)
	b.click("restore", `#system-snapshots-table tr[data-id="`+snap+`"] button[data-action="restore"]`)
	b.until("the restored link is up", link+`.dataset.down === 'false'`)
	ls = linkStatus{}
	pl.must(t, 200, "GET", base+"/links/link0", nil, &ls)
	if ls.Link.Faults.Down {
		t.Fatalf("after the restore from the page the link is still down: %+v", ls.Link)
	}
	b.until("traffic after the restore", `(() => {
		const all = [...`+link+`.querySelectorAll('.rec')];
		const gap = all.findLastIndex(r => r.classList.contains('gap') && r.textContent.includes('anew'));
		return gap >= 0 && all.slice(gap).some(r => r.dataset.from === 'gw' && r.textContent.includes('PING'));
	})()`)
	b.until("still running", state+` === 'running'`)

	// The restore's toast sits over the row's last buttons until it goes.
	b.until("the restore's toast went", `!document.querySelector('.toast')`)
	b.click("fork", `#system-snapshots-table tr[data-id="`+snap+`"] button[data-action="fork"]`)
	b.until("a link to the fork (or an error)", `document.querySelector('.toast a[href^="#/systems/"], .toast.error')`)
	if msg := eval[string](b, "error toast", `document.querySelector('.toast.error')?.textContent || ''`); msg != "" {
		t.Fatalf("fork from the page: %s", msg)
	}
	fork := strings.TrimPrefix(eval[string](b, "fork link", `document.querySelector('.toast a[href^="#/systems/"]').getAttribute('href')`), "#/systems/")
	var f model.System
	pl.must(t, 200, "GET", "/api/v1/systems/"+fork, nil, &f)
	if f.ID == id || f.Name != "ui-pair-fork" || f.State != model.StateRunning || len(f.Nodes) != 2 {
		t.Fatalf("fork from the page: %+v", f)
	}
	pl.must(t, 204, "DELETE", "/api/v1/systems/"+fork, nil, nil)

	// A node's own page: its console, and the way back to its system.
	b.click("gw's session page", `#system-nodes tr[data-node="gw"] a.node-link`)
	b.until("the node's session page", `document.querySelector('#session-system a')?.getAttribute('href') === '#/systems/`+id+`'`)
	b.waitTerminal("rtt ")
	b.click("back to the system", "#session-system a")
	b.until("the system page", state+` === 'running'`)

	b.click("power off", "#system-poweroff")
	b.until("the system is stopped", state+` === 'stopped'`)
	b.until("both nodes stopped", `[...document.querySelectorAll('#system-nodes tbody tr [data-state]')].filter(e => e.dataset.state === 'stopped').length === 2`)
	if !eval[bool](b, "reset disabled", `document.querySelector('#system-reset').disabled`) {
		t.Fatal("reset is enabled on a stopped system")
	}
	b.click("power on again", "#system-poweron")
	b.until("the system runs again", state+` === 'running'`)
	b.click("reset", "#system-reset")
	b.until("reset done", `[...document.querySelectorAll('.toast.ok')].some(e => e.textContent === 'Reset')`)
	waitConsole(t, pl, gw, "rtt ")

	// The list shows it, and follows changes made elsewhere.
	b.click("systems page", `#nav a[data-nav="systems"]`)
	row := `document.querySelector('#systems-table tr[data-id="` + id + `"]')`
	b.until("the system is listed", row+`?.querySelector('td.nodes')?.textContent === '2' && `+row+`.querySelector('td.links').textContent.includes('link0')`)
	b.until("listed running", row+`.querySelector('[data-state]').dataset.state === 'running'`)
	pl.must(t, 200, "POST", base+"/poweroff", nil, nil)
	b.until("listed stopped after a power off elsewhere", row+`.querySelector('[data-state]').dataset.state === 'stopped'`)
	b.shot("11-systems")

	// Delete from its page: the nodes go with it.
	b.click("open the system", `#systems-table tr[data-id="`+id+`"] a`)
	b.until("the system page", state+` === 'stopped'`)
	b.click("delete the system", "#system-delete")
	b.until("back on the list", `location.hash === '#/systems'`)
	pl.must(t, 404, "GET", base, nil, nil)
	for _, s := range []string{gw, sensor} {
		pl.must(t, 404, "GET", "/api/v1/sessions/"+s, nil, nil)
	}
	b.until("the list no longer has it", `!`+row)
}

// uiEthernetSystem: an Ethernet link's frames, read from its pcap, each
// by the node that sent it; deleted from the list.
func uiEthernetSystem(t *testing.T, pl *platform, b *browser, progs map[string]string) {
	var sys model.System
	pl.must(t, 201, "POST", "/api/v1/systems", map[string]any{
		"name":  "ui-lan",
		"nodes": []any{systemNode("gw", progs["ethping.elf"]), systemNode("n2", progs["ethpong.elf"])},
		"links": []any{map[string]any{"type": "ethernet", "name": "lan0", "nodes": []string{"gw", "n2"}}},
	}, &sys)
	b.do("open the system", chromedp.Evaluate[chromedp.Void](`location.hash = '#/systems/`+sys.ID+`'`))
	state := `document.querySelector('#system-state [data-state]')?.dataset.state`
	b.until("created", state+` === 'created'`)
	link := `document.querySelector('.card.link[data-link="lan0"]')`
	b.until("nothing to show before a power on", link+`.querySelector('.link-stream-status').textContent.includes('carried nothing yet')`)
	b.click("power on", "#system-poweron")
	b.until("running", state+` === 'running'`)
	for _, n := range []string{"gw", "n2"} {
		b.until("frames from "+n, link+`.querySelector('.rec[data-from="`+n+`"]')`)
		b.until("frames counted from "+n, `Number(`+link+`.querySelector('.link-counters tr[data-from="`+n+`"] [data-k="in"]')?.textContent || 0) > 0`)
	}
	b.shot("12-system-ethernet")

	b.click("systems page", `#nav a[data-nav="systems"]`)
	row := `#systems-table tr[data-id="` + sys.ID + `"]`
	b.click("delete from the list", row+` button[data-action="delete"]`)
	b.until("the row goes", `!document.querySelector('`+row+`')`)
	pl.must(t, 404, "GET", "/api/v1/systems/"+sys.ID, nil, nil)
}

// uiVirtualSystem: a virtual-time system's page shows its clock barrier's
// figures once it runs.
func uiVirtualSystem(t *testing.T, pl *platform, b *browser, progs map[string]string) {
	var sys model.System
	pl.must(t, 201, "POST", "/api/v1/systems", map[string]any{
		"name": "ui-clocks", "time": "virtual",
		"nodes": []any{systemNode("busy", progs["vclock.elf"]), systemNode("idle", progs["vclock.elf"])},
	}, &sys)
	b.do("open the system", chromedp.Evaluate[chromedp.Void](`location.hash = '#/systems/`+sys.ID+`'`))
	b.until("the clock card", `!document.querySelector('#system-clock-card').hidden && document.querySelector('#system-time').textContent.includes('virtual')`)
	// Not running: the API's 409 says why.
	b.until("the clock's refusal", `document.querySelector('#system-clock p')?.textContent.length > 0`)
	b.click("power on", "#system-poweron")
	dd := func(k string) string {
		return `document.querySelector('#system-clock dd[data-k="` + k + `"]')?.textContent`
	}
	b.until("clock readings", `Number(`+dd("polls")+`) > 0 && `+dd("running")+` === 'running' && `+dd("quantum")+` === '20ms'`)
	b.until("the spread and holds", `/^\d+\.\d ms$/.test(`+dd("max_spread_ms")+`) && /^\d+$/.test(`+dd("holds")+`) && /^\d+\.\d ms$/.test(`+dd("held_ms")+`)`)
	var c runnerapi.Clock
	pl.must(t, 200, "GET", "/api/v1/systems/"+sys.ID+"/clock", nil, &c)
	if !c.Running || c.Polls == 0 {
		t.Fatalf("clock: %+v", c)
	}
	b.shot("13-system-virtual")
	pl.must(t, 204, "DELETE", "/api/v1/systems/"+sys.ID, nil, nil)
	b.until("the page says it was deleted", `document.querySelector('#system-state [data-state]')?.dataset.state === 'deleted'`)
}
