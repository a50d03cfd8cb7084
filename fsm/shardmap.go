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

// A ShardMap's shards hang off a three-level trie (root, mid, leaf), so
// that a changed copy copies one short path of pointer arrays plus the
// touched shards, whatever the number of shards: at 100,000 keys a flat
// list of shard groups cost a 2 KiB copy per change.
const (
	// trieFanout is the width of mid and leaf nodes: each mid points to
	// trieFanout leaves, each leaf to trieFanout shards.
	trieFanout = 32
	trieBits   = 5
	minShards  = 64
	maxShards  = 16 * trieFanout * trieFanout
	// shardLoad is the mean number of keys per shard past which With
	// doubles the shard count, so a change copies O(shardLoad) entries.
	// Shards then hold 4 to 8 keys, which Go keeps as small maps (one
	// group, no table), the cheapest to clone and about as compact per
	// key as large ones.
	shardLoad = 4
)

type (
	shardLeaf[V any] [trieFanout]map[string]V
	shardMid[V any]  [trieFanout]*shardLeaf[V]
)

// ShardMap is an immutable map from string keys to V, split into shards so
// that a changed copy (With) costs the size of the shards it touches, not
// the size of the map. The zero value is an empty map. Get and GetBytes
// allocate nothing, so the request path can use it.
type ShardMap[V any] struct {
	root   []*shardMid[V]
	shards int // a power of two, at least minShards; 0 in the zero value
	n      int
}

// newShardMapOf returns an empty map with the given number of shards and
// every node of its trie allocated.
func newShardMapOf[V any](shards int) ShardMap[V] {
	leaves := shards / trieFanout
	m := ShardMap[V]{root: make([]*shardMid[V], (leaves+trieFanout-1)/trieFanout), shards: shards}
	for i := range m.root {
		m.root[i] = new(shardMid[V])
	}
	for l := range leaves {
		m.root[l>>trieBits][l&(trieFanout-1)] = new(shardLeaf[V])
	}
	return m
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
	return &ShardMapBuilder[V]{m: newShardMapOf[V](shards), hint: n/shards + 1}
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

// position locates the shard of a key hash in the trie: the mid in root,
// the leaf in that mid and the slot in that leaf.
func (m *ShardMap[V]) position(h uint64) (mid, leaf, slot int) {
	i := int(h & uint64(m.shards-1))
	l := i >> trieBits
	return l >> trieBits, l & (trieFanout - 1), i & (trieFanout - 1)
}

// shard returns the slot of the shard of a key hash.
func (m *ShardMap[V]) shard(h uint64) *map[string]V {
	mi, li, si := m.position(h)
	return &m.root[mi][li][si]
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
		for _, mid := range m.root {
			for _, leaf := range mid {
				if leaf == nil {
					continue
				}
				for _, sh := range leaf {
					for k, v := range sh {
						if !yield(k, v) {
							return
						}
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
	if m.shards == 0 || m.n+len(set) > m.shards*shardLoad*2 && m.shards < maxShards {
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
	// Copy on write: the root once, then each mid, leaf and shard the
	// first time a key falls into it.
	out := ShardMap[V]{root: slices.Clone(m.root), shards: m.shards, n: m.n}
	copied := make(map[any]bool, 3*(len(set)+len(del)))
	shard := func(k string) map[string]V {
		mi, li, si := out.position(maphash.String(shardSeed, k))
		mid := out.root[mi]
		if !copied[mid] {
			c := *mid
			mid = &c
			out.root[mi] = mid
			copied[mid] = true
		}
		leaf := mid[li]
		if !copied[leaf] {
			c := *leaf
			leaf = &c
			mid[li] = leaf
			copied[leaf] = true
		}
		slot := &leaf[si]
		if !copied[slot] {
			copied[slot] = true
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
