package fsm

import (
	"encoding/json"
	"hash/maphash"
	"iter"
	"maps"
	"slices"
)

// shardSeed hashes keys to shards. It is random per process: shard
// placement never shows in results, only in where a key is stored.
var shardSeed = maphash.MakeSeed()

const (
	// chunkSize shards make one chunk, the unit With copies: a change
	// copies the chunk list, the chunks it touches and their shards.
	chunkSize = 64
	minShards = chunkSize
	maxShards = 256 * chunkSize
	// shardLoad is the mean number of keys per shard past which With
	// doubles the shard count, so a change copies O(shardLoad) entries.
	// Shards then hold 4 to 8 keys, which Go keeps as small maps (one
	// group, no table), the cheapest to clone and about as compact per
	// key as large ones.
	shardLoad = 4
)

type shardChunk[V any] [chunkSize]map[string]V

// ShardMap is an immutable map from string keys to V, split into shards so
// that a changed copy (With) costs the size of the shards it touches, not
// the size of the map. The zero value is an empty map. Get and GetBytes
// allocate nothing, so the request path can use it.
type ShardMap[V any] struct {
	chunks []*shardChunk[V] // len*chunkSize is a power of two
	n      int
}

// NewShardMap returns a ShardMap holding the entries of m.
func NewShardMap[V any](m map[string]V) ShardMap[V] {
	b := NewShardMapBuilder[V](len(m))
	for k, v := range m {
		b.Set(k, v)
	}
	return b.Build()
}

// ShardMapBuilder fills a new ShardMap in place, without the copy of
// building a plain map first. It must not be used after Build.
type ShardMapBuilder[V any] struct {
	m    ShardMap[V]
	hint int // expected keys per shard
}

// NewShardMapBuilder returns a builder sized for about n keys.
func NewShardMapBuilder[V any](n int) *ShardMapBuilder[V] {
	shards := shardsFor(n)
	b := &ShardMapBuilder[V]{hint: n/shards + 1}
	b.m.chunks = make([]*shardChunk[V], shards/chunkSize)
	for i := range b.m.chunks {
		b.m.chunks[i] = new(shardChunk[V])
	}
	return b
}

// Get returns the value of k so far, or the zero value.
func (b *ShardMapBuilder[V]) Get(k string) V { return b.m.Get(k) }

// Set sets k to v.
func (b *ShardMapBuilder[V]) Set(k string, v V) {
	sh := b.m.shard(maphash.String(shardSeed, k))
	if *sh == nil {
		*sh = make(map[string]V, b.hint)
	}
	if _, ok := (*sh)[k]; !ok {
		b.m.n++
	}
	(*sh)[k] = v
}

// Build returns the map built.
func (b *ShardMapBuilder[V]) Build() ShardMap[V] { return b.m }

func shardsFor(n int) int {
	s := minShards
	for s < maxShards && n > s*shardLoad {
		s *= 2
	}
	return s
}

// shard returns the slot of the shard of a key hash.
func (m *ShardMap[V]) shard(h uint64) *map[string]V {
	i := h & uint64(len(m.chunks)*chunkSize-1)
	return &m.chunks[i/chunkSize][i%chunkSize]
}

// Len is the number of keys.
func (m ShardMap[V]) Len() int { return m.n }

// Lookup returns the value of k and whether it is present.
func (m ShardMap[V]) Lookup(k string) (V, bool) {
	if m.n == 0 {
		var zero V
		return zero, false
	}
	v, ok := (*m.shard(maphash.String(shardSeed, k)))[k]
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
	return (*m.shard(maphash.Bytes(shardSeed, b)))[string(b)]
}

// All iterates over every key and value, in no particular order.
func (m ShardMap[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for _, c := range m.chunks {
			for _, sh := range c {
				for k, v := range sh {
					if !yield(k, v) {
						return
					}
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
	if m.chunks == nil || m.n+len(set) > len(m.chunks)*chunkSize*shardLoad*2 && len(m.chunks)*chunkSize < maxShards {
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
	out := ShardMap[V]{chunks: slices.Clone(m.chunks), n: m.n}
	copiedChunk := make(map[int]bool, len(set)+len(del))
	copiedShard := make(map[*map[string]V]bool, len(set)+len(del))
	shard := func(k string) map[string]V {
		i := int(maphash.String(shardSeed, k) & uint64(len(out.chunks)*chunkSize-1))
		ci := i / chunkSize
		if !copiedChunk[ci] {
			copiedChunk[ci] = true
			c := *out.chunks[ci]
			out.chunks[ci] = &c
		}
		slot := &out.chunks[ci][i%chunkSize]
		if !copiedShard[slot] {
			copiedShard[slot] = true
			// Clone copies the shard's table as it is; copying entry by
			// entry would rehash every key, reading each key's bytes from
			// memory that in a large table is rarely in cache.
			sh := maps.Clone(*slot)
			if sh == nil {
				sh = make(map[string]V, 1)
			}
			*slot = sh
		}
		return *slot
	}
	for _, k := range del {
		if _, isSet := set[k]; isSet {
			continue
		}
		if _, ok := out.Lookup(k); !ok {
			continue // absent, or a repeat of a key already deleted
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

// MarshalJSON encodes the map as a JSON object with sorted keys, like a
// plain map.
func (m ShardMap[V]) MarshalJSON() ([]byte, error) {
	return json.Marshal(m.Map())
}
