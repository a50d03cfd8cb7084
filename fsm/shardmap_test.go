package fsm

import (
	"fmt"
	"maps"
	"math/rand"
	"testing"
)

// TestShardMapWithMatchesPlainMap applies random sets and deletes to a
// ShardMap and a plain map side by side, through growth, and checks that
// every version agrees with its plain map and that older versions stay
// unchanged.
func TestShardMapWithMatchesPlainMap(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	type version struct {
		m    ShardMap[int]
		want map[string]int
	}
	var versions []version
	cur, want := NewShardMap(map[string]int{}), map[string]int{}
	for step := range 400 {
		set := map[string]int{}
		var del []string
		for range rng.Intn(40) {
			set[fmt.Sprint("k", rng.Intn(5000))] = step
		}
		for range rng.Intn(10) {
			del = append(del, fmt.Sprint("k", rng.Intn(5000)))
		}
		cur = cur.With(set, del)
		for _, k := range del {
			delete(want, k)
		}
		maps.Copy(want, set)
		if !maps.Equal(cur.Map(), want) || cur.Len() != len(want) {
			t.Fatalf("step %d: map has %d keys, want %d, or different values", step, cur.Len(), len(want))
		}
		if step%50 == 0 {
			versions = append(versions, version{cur, maps.Clone(want)})
		}
	}
	if cur.Len() < 2000 {
		t.Fatalf("only %d keys: growth was not exercised", cur.Len())
	}
	for i, v := range versions {
		if !maps.Equal(v.m.Map(), v.want) {
			t.Fatalf("version %d changed after later With calls", i)
		}
	}
	for k, v := range want {
		if got := cur.GetBytes([]byte(k)); got != v {
			t.Fatalf("GetBytes(%q) = %d, want %d", k, got, v)
		}
	}
	if _, ok := cur.Lookup("absent"); ok {
		t.Fatal("Lookup found an absent key")
	}
	var zero ShardMap[int]
	if zero.Get("k1") != 0 || zero.Len() != 0 || zero.GetBytes([]byte("k1")) != 0 {
		t.Fatal("zero ShardMap is not empty")
	}
}

func TestShardMapGetAllocatesNothing(t *testing.T) {
	m := NewShardMap(map[string]int{"example.com": 1})
	b := []byte("example.com-with-a-name-longer-than-32-bytes")
	if n := testing.AllocsPerRun(100, func() { _ = m.Get("example.com"); _ = m.GetBytes(b) }); n != 0 {
		t.Fatalf("Get allocates %v times", n)
	}
}

// BenchmarkShardMapWith prices one changed key at two sizes; the cost must
// not follow the size.
func BenchmarkShardMapWith(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			src := make(map[string]int, n)
			for i := range n {
				src[fmt.Sprint("host", i, ".example.com")] = i
			}
			m := NewShardMap(src)
			set := map[string]int{"new.example.com": 1}
			for b.Loop() {
				_ = m.With(set, []string{"host7.example.com"})
			}
		})
	}
}

// BenchmarkShardMapGet prices a lookup of random keys (mostly cold in
// cache at 100,000 keys), the data plane's cost per request.
func BenchmarkShardMapGet(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			m := NewShardMap[int](nil)
			keys := make([]string, n)
			set := make(map[string]int, n)
			for i := range n {
				keys[i] = fmt.Sprint("host", i, ".example.com")
				set[keys[i]] = i
			}
			// Grown through With, as the FSM's tables are.
			for i := 0; i < n; i += 512 {
				part := make(map[string]int, 512)
				for _, k := range keys[i:min(i+512, n)] {
					part[k] = set[k]
				}
				m = m.With(part, nil)
			}
			rng := rand.New(rand.NewSource(1))
			order := rng.Perm(n)
			i := 0
			for b.Loop() {
				_ = m.Get(keys[order[i%n]])
				i++
			}
		})
	}
}
