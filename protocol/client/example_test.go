package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/raftgate/raftgate/protocol/client"
)

// A service registers with the cluster, stages a route and applies it.
func Example() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{
		Addrs:    []string{"10.0.0.1:81", "10.0.0.2:81", "10.0.0.3:81"},
		Service:  "billing",
		Instance: "billing-7f9c",
		Metadata: json.RawMessage(`{"version":"1.4.2"}`),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	id, err := c.RouteAdd(ctx, client.RouteSpec{
		Domains:    []string{"billing.example.com"},
		Path:       "/api",
		BackendURL: "http://10.0.1.5:8080",
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.ConfigApply(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("serving as", id)
}

func ExampleClient_RouteAdd() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Addrs: []string{"127.0.0.1:81"}, Service: "web"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	id, err := c.RouteAdd(ctx, client.RouteSpec{
		Domains:    []string{"example.com", "*.example.com"},
		Path:       "/",
		BackendURL: "http://127.0.0.1:3000",
		Priority:   10,
	})
	if err != nil {
		log.Fatal(err)
	}
	// Staged settings for the new route, applied together with it.
	_ = c.OptionsSet(ctx, id, "timeout", "10s")
	_ = c.HealthSet(ctx, id, "/healthz", 5*time.Second, time.Second)
	if err := c.ConfigApply(ctx); err != nil {
		log.Fatal(err)
	}
}

func ExampleClient_OnEvent() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Addrs: []string{"127.0.0.1:81"}, Service: "web"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	c.OnEvent(func(ev client.Event) {
		if ev.Type != client.EventBackendHealthChanged {
			return
		}
		var h struct {
			RouteID string `json:"route_id"`
			Backend string `json:"backend"`
			Healthy bool   `json:"healthy"`
		}
		if json.Unmarshal(ev.Data, &h) == nil {
			log.Printf("route %s backend %s healthy=%v", h.RouteID, h.Backend, h.Healthy)
		}
	})
	if err := c.Subscribe(ctx, client.EventBackendHealthChanged); err != nil {
		log.Fatal(err)
	}
}

func ExampleClient_OnReregister() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Addrs: []string{"10.0.0.1:81", "10.0.0.2:81"}, Service: "web"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	stageRoutes := func(ctx context.Context) error {
		if _, err := c.RouteAdd(ctx, client.RouteSpec{Domains: []string{"example.com"}, Path: "/", BackendURL: "http://127.0.0.1:3000"}); err != nil {
			return err
		}
		return c.ConfigApply(ctx)
	}
	// If the session expired while the client was cut off, failover
	// registers a new one, which starts empty: stage and apply again.
	c.OnReregister(func(ctx context.Context, oldID, newID string) {
		if err := stageRoutes(ctx); err != nil {
			log.Printf("re-adding routes for %s: %v", newID, err)
		}
	})
	if err := stageRoutes(ctx); err != nil {
		log.Fatal(err)
	}
}

func ExampleClient_MaintEnter() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Addrs: []string{"127.0.0.1:81"}, Service: "web"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Returns once the node reports the built-in maintenance page serving.
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	switch err := c.MaintEnter(wctx, client.TargetAll, ""); {
	case errors.Is(err, client.ErrMaintenanceTimeout):
		log.Print("maintenance backend never became reachable")
	case err != nil:
		log.Fatal(err)
	}
}

func ExampleIsNotFound() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Addrs: []string{"127.0.0.1:81"}, Service: "web"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	err = c.RouteRemove(ctx, "r42")
	switch {
	case client.IsRouteNotFound(err):
		// Already gone (or another session's route): nothing to do.
	case errors.Is(err, client.ErrConnectionLost):
		// Unknown outcome: check with RouteList before retrying.
	case err != nil:
		log.Fatal(err)
	}
}

func ExampleDial() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "10.0.0.1:81", "10.0.0.2:81")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	st, err := c.ClusterStatus(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, n := range st.Nodes {
		fmt.Println(n.ID, n.ControlAddr, n.RaftState, n.AppliedIndex, n.Alive)
	}
}
