package proxy

import (
	"net/http"
	"strconv"
)

// Retry-After values, in seconds, for answers this node makes itself.
const (
	retryNoBackend   = 5
	retryMaintenance = 60
)

var (
	textPlain = []string{"text/plain; charset=utf-8"}
	textHTML  = []string{"text/html; charset=utf-8"}
	noSniff   = []string{"nosniff"}
	noStore   = []string{"no-store"}
)

// writePlain answers with a short plain-text page. Error pages never carry
// details of the failure: those go to the log.
func writePlain(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h["Content-Type"] = textPlain
	h["X-Content-Type-Options"] = noSniff
	h["Cache-Control"] = noStore
	h["Content-Length"] = []string{strconv.Itoa(len(msg))}
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg))
}

func writeRetry(w http.ResponseWriter, code int, seconds int, msg string) {
	w.Header()["Retry-After"] = []string{strconv.Itoa(seconds)}
	writePlain(w, code, msg)
}

const maintenancePage = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Down for maintenance</title></head>
<body><h1>Down for maintenance</h1><p>This service is undergoing maintenance. Please try again shortly.</p></body></html>
`

func writeMaintenance(w http.ResponseWriter) {
	h := w.Header()
	h["Content-Type"] = textHTML
	h["Cache-Control"] = noStore
	h["Retry-After"] = []string{strconv.Itoa(retryMaintenance)}
	h["Content-Length"] = []string{strconv.Itoa(len(maintenancePage))}
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(maintenancePage))
}

const (
	msgNotFound    = "404 not found: no route for this host and path\n"
	msgNoBackend   = "503 service unavailable: no healthy backend\n"
	msgDraining    = "503 service unavailable: draining\n"
	msgBreakerOpen = "503 service unavailable: circuit open\n"
	msgRateLimited = "429 too many requests\n"
	msgBadGateway  = "502 bad gateway\n"
	msgTimeout     = "504 gateway timeout\n"
	msgTooLarge    = "413 request entity too large\n"
)
