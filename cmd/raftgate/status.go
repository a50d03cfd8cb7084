package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/raftgate/raftgate/cmd/raftgate/localcluster"
)

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status", `Prints the cluster as one node sees it: leader, term, and every member with its
addresses, raft state, applied index and liveness (CLUSTER_STATUS).`, stderr)
	addr := fs.String("addr", "127.0.0.1:81", "control address of any node")
	asJSON := fs.Bool("json", false, "print the raw CLUSTER_STATUS JSON")
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	st, err := localcluster.QueryStatus(ctx, *addr)
	if err != nil {
		fmt.Fprintf(stderr, "raftgate status: %s: %v\n", *addr, err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
		return 0
	}
	leader := st.Leader
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(stdout, "leader: %s  term: %d\n\n", leader, st.Term)
	fmt.Fprintf(stdout, "%-12s %-10s %-6s %-8s %-22s %s\n", "NODE", "STATE", "ALIVE", "APPLIED", "CONTROL", "PROXY")
	for _, n := range st.Nodes {
		fmt.Fprintf(stdout, "%-12s %-10s %-6t %-8d %-22s %s\n", n.ID, strings.ToLower(n.RaftState), n.Alive, n.AppliedIndex, n.ControlAddr, n.ProxyAddr)
	}
	return 0
}

func runLeave(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("leave", `Asks a running node, through its admin address, to leave the cluster gracefully:
it hands off leadership if it has it and is removed from the voter set. The
process keeps running until stopped.`, stderr)
	admin := fs.String("admin-addr", "127.0.0.1:8500", "admin address of the node that should leave")
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	return adminPost("leave", "http://"+*admin+"/v1/leave", stdout, stderr)
}

// adminPost sends an operator request to a node's admin address and
// prints the answer: to stdout with exit status 0 on 200 OK, else to
// stderr with status 1.
func adminPost(cmd, u string, stdout, stderr io.Writer) int {
	client := &http.Client{Timeout: 40 * time.Second}
	resp, err := client.Post(u, "text/plain", nil)
	if err != nil {
		fmt.Fprintf(stderr, "raftgate %s: %v\n", cmd, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "raftgate %s: %s: %s", cmd, resp.Status, body)
		return 1
	}
	fmt.Fprintf(stdout, "%s", body)
	return 0
}

func runForceLeave(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("force-leave", `Argument: the ID of the node to remove, as 'raftgate status' lists it.

Removes a failed node from the cluster's voter set now, instead of after
--dead-node-reap (72h by default), so that the quorum stops counting it.
Ask any live node through its admin address. A node that is still alive is
refused: stop it first, or run 'raftgate leave' on it. If the removed node
comes back, it joins again like a new node.`, stderr)
	admin := fs.String("admin-addr", "127.0.0.1:8500", "admin address of any live node")
	pos, code, stop := parseFlagsAndArgs(fs, args, 1)
	if stop {
		return code
	}
	node := pos[0]
	return adminPost("force-leave", "http://"+*admin+"/v1/force-leave?node="+url.QueryEscape(node), stdout, stderr)
}
