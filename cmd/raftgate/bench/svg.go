package bench

import (
	"fmt"
	"html"
	"os"
	"strings"
)

// SVG draws the report's charts as horizontal bar charts, one panel per
// chart and one bar per row with a value. It needs no library: the chart is
// plain SVG text any browser renders.
func (r *Report) SVG() string {
	const (
		width   = 760
		labelW  = 200
		valueW  = 110
		barH    = 22
		gap     = 6
		titleH  = 34
		panelGp = 18
	)
	barMax := float64(width - labelW - valueW - 20)
	var b strings.Builder
	y := 40
	var body strings.Builder
	for _, ch := range r.Charts {
		var names []string
		var vals []float64
		maxV := 0.0
		for _, row := range r.Rows {
			v, ok := row.Metrics[ch.Key]
			if !ok || v != v {
				continue
			}
			names = append(names, row.Name)
			vals = append(vals, v)
			maxV = max(maxV, v)
		}
		if len(vals) == 0 {
			continue
		}
		fmt.Fprintf(&body, `<text x="10" y="%d" font-size="15" font-weight="bold">%s</text>`+"\n", y+20, html.EscapeString(ch.Title))
		y += titleH
		for i, v := range vals {
			w := 0.0
			if maxV > 0 {
				w = v / maxV * barMax
			}
			fill := "#4a7fb5"
			if strings.HasPrefix(names[i], "raftgate") {
				fill = "#d9822b"
			}
			fmt.Fprintf(&body, `<text x="%d" y="%d" font-size="13" text-anchor="end">%s</text>`+"\n", labelW-8, y+barH-6, html.EscapeString(names[i]))
			fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", labelW, y, w, barH, fill)
			fmt.Fprintf(&body, `<text x="%.1f" y="%d" font-size="13">%s</text>`+"\n", float64(labelW)+w+6, y+barH-6, fmtNum(v))
			y += barH + gap
		}
		y += panelGp
	}
	h := y + 30
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">`+"\n", width, h, width, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="24" font-size="17" font-weight="bold">raftgate bench %s: %s</text>`+"\n", html.EscapeString(r.Bench), html.EscapeString(r.Title))
	b.WriteString(body.String())
	fmt.Fprintf(&b, `<text x="10" y="%d" font-size="11" fill="#555">%s</text>`+"\n", h-10, html.EscapeString(r.Machine.String()))
	b.WriteString("</svg>\n")
	return b.String()
}

// WriteSVG writes SVG() to path.
func (r *Report) WriteSVG(path string) error {
	if err := os.WriteFile(path, []byte(r.SVG()), 0o644); err != nil {
		return fmt.Errorf("write chart %s: %w", r.Bench, err)
	}
	return nil
}
