package fsm

import (
	"hash/maphash"
	"iter"
	"maps"
)

// shardSeed hashes keys to shards. It is random per process: shard
// placement never shows in results, only in where a key is stored.
var shardSeed = maphash.MakeSeed()

const (
	minShards = 16
	maxShards = 4096
	// shardLoad is the mean number of keys per shard past which With
	// doubles the shard count, so a change copies O(shardLoad) entries.
	shardLoad = 32
)

// ShardMap is an immutable map from string keys to V, split into shards so
// that a changed copy (With) costs the size of the shards it touches, not
// the size of the map. The zero value is an empty map. Get and GetBytes
// allocate nothing, so the request path can use it.
type ShardMap[V any] struct {
	shards []map[string]V // len is a power of two; nil entries are empty
	n      int
}

// NewShardMap returns a ShardMap holding the entries of m.
func NewShardMap[V any](m map[string]V) ShardMap[V] {
	var out ShardMap[V]
	out.shards = make([]map[string]V, shardsFor(len(m)))
	for k, v := range m {
		out.put(k, v)
	}
	return out
}

func shardsFor(n int) int {
	s := minShards
	for s < maxShards && n > s*shardLoad {
		s *= 2
	}
	return s
}

func (m *ShardMap[V]) put(k string, v V) {
	i := maphash.String(shardSeed, k) & uint64(len(m.shards)-1)
	sh := m.shards[i]
	if sh == nil {
		sh = make(map[string]V, 1)
		m.shards[i] = sh
	}
	if _, ok := sh[k]; !ok {
		m.n++
	}
	sh[k] = v
}

// Len is the number of keys.
func (m ShardMap[V]) Len() int { return m.n }

// Lookup returns the value of k and whether it is present.
func (m ShardMap[V]) Lookup(k string) (V, bool) {
	if m.n == 0 {
		var zero V
		return zero, false
	}
	v, ok := m.shards[maphash.String(shardSeed, k)&uint64(len(m.shards)-1)][k]
	return v, ok
}

// Get returns the value of k, or the zero value when k is absent.
func (m ShardMap[V]) Get(k string) V {
	v, _ := m.Lookup(k)
	return v
}

// GetBytes is Get for a key held in a byte slice; it does not copy b.
func (m ShardMap[V]) GetBytes(b []byte) V {
	if m.n == 0 {
		var zero V
		return zero
	}
	return m.shards[maphash.Bytes(shardSeed, b)&uint64(len(m.shards)-1)][string(b)]
}

// All iterates over every key and value, in no particular order.
func (m ShardMap[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for _, sh := range m.shards {
			for k, v := range sh {
				if !yield(k, v) {
					return
				}
			}
		}
	}
}

// With returns a copy of m with the keys of set set and the keys of del
// removed (set wins when a key is in both). m is unchanged; the copy
// shares every shard no key of set or del falls into.
func (m ShardMap[V]) With(set map[string]V, del []string) ShardMap[V] {
	if len(set) == 0 && len(del) == 0 {
		return m
	}
	if m.shards == nil || m.n+len(set) > len(m.shards)*shardLoad*2 && len(m.shards) < maxShards {
		// Growing: rebuild once with more shards; amortized over the
		// insertions that made it necessary.
		all := make(map[string]V, m.n+len(set))
		for k, v := range m.All() {
			all[k] = v
		}
		for _, k := range del {
			delete(all, k)
		}
		maps.Copy(all, set)
		return NewShardMap(all)
	}
	out := ShardMap[V]{shards: make([]map[string]V, len(m.shards)), n: m.n}
	copy(out.shards, m.shards)
	copied := make(map[uint64]bool, len(set)+len(del))
	shard := func(k string) map[string]V {
		i := maphash.String(shardSeed, k) & uint64(len(out.shards)-1)
		if !copied[i] {
			copied[i] = true
			sh := make(map[string]V, len(out.shards[i])+1)
			maps.Copy(sh, out.shards[i])
			out.shards[i] = sh
		}
		return out.shards[i]
	}
	for _, k := range del {
		if _, isSet := set[k]; isSet {
			continue
		}
		if _, ok := m.Lookup(k); !ok {
			continue
		}
		delete(shard(k), k)
		out.n--
	}
	for k, v := range set {
		sh := shard(k)
		if _, ok := sh[k]; !ok {
			out.n++
		}
		sh[k] = v
	}
	return out
}

// Map returns the entries as a plain map (for tests and tools).
func (m ShardMap[V]) Map() map[string]V {
	out := make(map[string]V, m.n)
	for k, v := range m.All() {
		out[k] = v
	}
	return out
}
