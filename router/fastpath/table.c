/*
 * The flow cache's entries: by key (what a frame looks up), and by owner (what withdraws them).
 *
 * Both are open-addressing tables with linear probing, kept at most half full, where a deleted slot becomes a
 * tombstone until the next growth.  An entry names up to OWNERS owners (its NAT session or helper flow, and what
 * its helper named: a tunnel, an SPI); each owner lists its entries, so that withdrawing an owner takes exactly
 * its own, whatever else they belong to.  An entry taken out while it has counts Python has not read stays on the
 * dirty list until the next sync, which frees it.
 */

#include "flowcache.h"

static Entry ENTRY_TOMBSTONE;
static Owner OWNER_TOMBSTONE;
#define DEAD_ENTRY (&ENTRY_TOMBSTONE)
#define DEAD_OWNER (&OWNER_TOMBSTONE)
#define FIRST_CAPACITY 1024

static inline uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static inline uint64_t key_hash(const Key *k) {
    uint64_t a = (uint64_t)k->src << 32 | k->dst;
    uint64_t b = (uint64_t)k->id << 32 | (uint32_t)k->sport << 16 | k->dport;
    return mix(a ^ mix(b ^ mix((uint64_t)k->port << 8 | k->proto)));
}

static inline int key_eq(const Key *a, const Key *b) {
    return a->src == b->src && a->dst == b->dst && a->id == b->id && a->sport == b->sport &&
           a->dport == b->dport && a->port == b->port && a->proto == b->proto;
}

static inline size_t owner_hash(PyObject *o) { return (size_t)mix((uint64_t)(uintptr_t)o); }

int table_init(FlowCache *fc) {
    fc->capacity = fc->owner_capacity = FIRST_CAPACITY;
    fc->slots = PyMem_Calloc(fc->capacity, sizeof(Entry *));
    fc->owners = PyMem_Calloc(fc->owner_capacity, sizeof(Owner *));
    if (fc->slots == NULL || fc->owners == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

Entry *table_lookup(FlowCache *fc, const Key *k) {
    size_t mask = fc->capacity - 1;
    for (size_t i = (size_t)key_hash(k) & mask;; i = (i + 1) & mask) {
        Entry *e = fc->slots[i];
        if (e == NULL)
            return NULL;
        if (e != DEAD_ENTRY && key_eq(&e->key, k))
            return e;
    }
}

/* -- owners ------------------------------------------------------------------------------------------- */

static Owner **owner_slot(FlowCache *fc, PyObject *o, int for_insert) {
    size_t mask = fc->owner_capacity - 1;
    Owner **first_dead = NULL;
    for (size_t i = owner_hash(o) & mask;; i = (i + 1) & mask) {
        Owner *r = fc->owners[i];
        if (r == NULL)
            return for_insert && first_dead != NULL ? first_dead : &fc->owners[i];
        if (r == DEAD_OWNER) {
            if (first_dead == NULL)
                first_dead = &fc->owners[i];
        } else if (r->owner == o) {
            return &fc->owners[i];
        }
    }
}

static Owner *owner_find(FlowCache *fc, PyObject *o) {
    Owner *r = *owner_slot(fc, o, 0);
    return r == NULL || r == DEAD_OWNER ? NULL : r;
}

static int owners_grow(FlowCache *fc) {
    size_t capacity = fc->owner_capacity;
    while ((fc->owners_used + 1) * 4 > capacity)
        capacity *= 2;
    Owner **old = fc->owners;
    size_t old_capacity = fc->owner_capacity;
    fc->owners = PyMem_Calloc(capacity, sizeof(Owner *));
    if (fc->owners == NULL) {
        fc->owners = old;
        PyErr_NoMemory();
        return -1;
    }
    fc->owner_capacity = capacity;
    fc->owner_tombstones = 0;
    for (size_t j = 0; j < old_capacity; j++)
        if (old[j] != NULL && old[j] != DEAD_OWNER)
            *owner_slot(fc, old[j]->owner, 1) = old[j];
    PyMem_Free(old);
    return 0;
}

/* ``e`` among ``o``'s entries. */
static int owner_add(FlowCache *fc, PyObject *o, Entry *e) {
    Owner *r = owner_find(fc, o);
    if (r == NULL) {
        if ((fc->owners_used + fc->owner_tombstones + 1) * 2 > fc->owner_capacity && owners_grow(fc) < 0)
            return -1;
        r = PyMem_Calloc(1, sizeof(Owner));
        if (r == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        Owner **slot = owner_slot(fc, o, 1);
        if (*slot == DEAD_OWNER)
            fc->owner_tombstones--;
        *slot = r;
        fc->owners_used++;
        Py_INCREF(o);
        r->owner = o;
    }
    if (r->n == r->capacity) {
        Py_ssize_t capacity = r->capacity ? r->capacity * 2 : 2;
        Entry **entries = PyMem_Realloc(r->entries, (size_t)capacity * sizeof(Entry *));
        if (entries == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        r->entries = entries;
        r->capacity = capacity;
    }
    r->entries[r->n++] = e;
    return 0;
}

/* ``e`` no more among ``o``'s entries; an owner left with none is forgotten. */
static void owner_drop(FlowCache *fc, PyObject *o, Entry *e) {
    Owner **slot = owner_slot(fc, o, 0);
    Owner *r = *slot;
    if (r == NULL || r == DEAD_OWNER)
        return;
    for (Py_ssize_t i = 0; i < r->n; i++) {
        if (r->entries[i] == e) {
            r->entries[i] = r->entries[--r->n];
            break;
        }
    }
    if (r->n == 0) {
        *slot = DEAD_OWNER;
        fc->owners_used--;
        fc->owner_tombstones++;
        Py_DECREF(r->owner);
        PyMem_Free(r->entries);
        PyMem_Free(r);
    }
}

int table_owns(FlowCache *fc, PyObject *o) { return owner_find(fc, o) != NULL; }

/* -- entries ------------------------------------------------------------------------------------------ */

void entry_release(Entry *e) {
    Py_XDECREF(e->target);
    Py_XDECREF(e->helper);
    for (int i = 0; i < OWNERS; i++)
        Py_XDECREF(e->owner[i]);
    PyMem_Free(e);
}

static int entries_grow(FlowCache *fc) {
    size_t capacity = fc->capacity;
    while ((fc->used + 1) * 4 > capacity)
        capacity *= 2;
    Entry **slots = PyMem_Calloc(capacity, sizeof(Entry *));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t j = 0; j < fc->capacity; j++) {
        Entry *e = fc->slots[j];
        if (e == NULL || e == DEAD_ENTRY)
            continue;
        size_t i = (size_t)key_hash(&e->key) & (capacity - 1);
        while (slots[i] != NULL)
            i = (i + 1) & (capacity - 1);
        slots[i] = e;
    }
    PyMem_Free(fc->slots);
    fc->slots = slots;
    fc->capacity = capacity;
    fc->tombstones = 0;
    return 0;
}

/* Take the entry in slot ``i`` out: from its owners, and freed now or at the next sync. */
static void unlink_slot(FlowCache *fc, size_t i) {
    Entry *e = fc->slots[i];
    fc->slots[i] = DEAD_ENTRY;
    fc->used--;
    fc->tombstones++;
    for (int j = 0; j < OWNERS; j++)
        if (e->owner[j] != NULL)
            owner_drop(fc, e->owner[j], e);
    e->removed = 1;
    if (!e->dirty)
        entry_release(e);
}

int table_remove(FlowCache *fc, const Key *k) {
    size_t mask = fc->capacity - 1;
    for (size_t i = (size_t)key_hash(k) & mask;; i = (i + 1) & mask) {
        Entry *e = fc->slots[i];
        if (e == NULL)
            return 0;
        if (e != DEAD_ENTRY && key_eq(&e->key, k)) {
            unlink_slot(fc, i);
            return 1;
        }
    }
}

/* An entry into the table, replacing any with its key, and among its owners' entries. */
int table_insert(FlowCache *fc, Entry *e) {
    table_remove(fc, &e->key);
    if ((fc->used + fc->tombstones + 1) * 2 > fc->capacity && entries_grow(fc) < 0)
        return -1;
    size_t mask = fc->capacity - 1, i = (size_t)key_hash(&e->key) & mask;
    while (fc->slots[i] != NULL && fc->slots[i] != DEAD_ENTRY)
        i = (i + 1) & mask;
    for (int j = 0; j < OWNERS; j++) {
        if (e->owner[j] != NULL && owner_add(fc, e->owner[j], e) < 0) {
            for (int k = 0; k < j; k++)
                if (e->owner[k] != NULL)
                    owner_drop(fc, e->owner[k], e);
            return -1;
        }
    }
    if (fc->slots[i] == DEAD_ENTRY)
        fc->tombstones--;
    fc->slots[i] = e;
    fc->used++;
    return 0;
}

void table_withdraw(FlowCache *fc, PyObject *owner) {
    Owner *r;
    while ((r = owner_find(fc, owner)) != NULL) {     /* each removal changes the owner's list: look again */
        Entry *e = r->entries[r->n - 1];
        if (!table_remove(fc, &e->key))
            owner_drop(fc, owner, e);                 /* not reached: an entry is its owners' while in the table */
    }
}

size_t table_withdraw_mac(FlowCache *fc, int port, const uint8_t *mac) {
    size_t n = 0;
    for (size_t i = 0; i < fc->capacity; i++) {
        Entry *e = fc->slots[i];
        if (e != NULL && e != DEAD_ENTRY && !e->marker && e->out_port == port && memcmp(e->eth, mac, 6) == 0) {
            unlink_slot(fc, i);
            n++;
        }
    }
    return n;
}

/* [(port, proto, src, sport, dst, dport, id, marker)] of every entry: what the tests look at. */
PyObject *table_keys(FlowCache *fc) {
    PyObject *list = PyList_New(0);
    for (size_t i = 0; list != NULL && i < fc->capacity; i++) {
        Entry *e = fc->slots[i];
        if (e == NULL || e == DEAD_ENTRY)
            continue;
        const Key *k = &e->key;
        PyObject *item = Py_BuildValue("(IIkIkIkO)", (unsigned)k->port, (unsigned)k->proto, (unsigned long)k->src,
                                       (unsigned)k->sport, (unsigned long)k->dst, (unsigned)k->dport,
                                       (unsigned long)k->id, e->marker ? Py_True : Py_False);
        if (item == NULL || PyList_Append(list, item) < 0)
            Py_CLEAR(list);
        Py_XDECREF(item);
    }
    return list;
}

void table_clear(FlowCache *fc) {
    for (size_t i = 0; i < fc->capacity; i++)
        if (fc->slots[i] != NULL && fc->slots[i] != DEAD_ENTRY)
            unlink_slot(fc, i);
}

void table_free(FlowCache *fc) {
    if (fc->slots != NULL) {
        table_clear(fc);
        for (Entry *e = fc->dirty, *next; e != NULL; e = next) {
            next = e->next_dirty;
            entry_release(e);
        }
        fc->dirty = NULL;
        PyMem_Free(fc->slots);
        fc->slots = NULL;
    }
    PyMem_Free(fc->owners);
    fc->owners = NULL;
}
