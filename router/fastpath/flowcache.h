/*
 * The fast path's flow cache (router/fastpath/): what its three parts share.
 *
 *   table.c     the entries by key, and by owner (what withdraws them)
 *   forward.c   one frame: every check the Python path makes, then the rewrite it made
 *   _flowcache.c    the Python type: install, withdraw, forward, drain, sync, stats
 */

#ifndef VPNROUTER_FLOWCACHE_H
#define VPNROUTER_FLOWCACHE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>

#define VNET 12                    /* the virtio-net header before every frame */
#define IPOFF (VNET + 14)          /* where the IPv4 header starts */
#define NEEDS_CSUM 1               /* virtio-net: the transport checksum field holds the pseudo-header sum */
#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_GRE 47
#define PROTO_ESP 50
#define OWNERS 3                   /* objects whose end withdraws an entry: its session or flow, and a helper's */
#define ACCOUNT_OUTBOUND 1         /* an entry's frames leave the LAN */
#define ACCOUNT_FLOW 2             /* they belong to a helper's flow: one packet a datagram, not a segment count */

enum split { SPLIT_NONE = 0, SPLIT_NATT_SPI = 1, SPLIT_L2TP_TUNNEL = 2 };
enum restore { RESTORE_NONE = 0, RESTORE_AT = 1, RESTORE_SPLIT_ID = 2 };
enum miss {
    MISS_SHORT, MISS_NOT_IPV4, MISS_OTHER_MAC, MISS_IP_HEADER, MISS_IP_CHECKSUM, MISS_ADDRESS, MISS_TTL,
    MISS_FRAGMENT, MISS_PROTOCOL, MISS_TCP_FLAGS, MISS_PAYLOAD, MISS_NO_ENTRY, MISS_MTU, MISS_ARP, MISS_COUNT
};

typedef struct {
    uint32_t src, dst, id;         /* id: the Call ID, SPI or Tunnel ID that tells flows apart, else 0 */
    uint16_t sport, dport;         /* ICMP queries: the identifier stands for a port, as the NAT keys them */
    uint8_t port, proto, pad[2];
} Key;

typedef struct Entry {
    Key key;
    uint8_t marker;                /* only says how the flows of this 5-tuple are told apart: ``split`` */
    uint8_t split;
    uint8_t removed, dirty;
    uint8_t out_port, addr_at;     /* 12: the source address is rewritten (outbound), 16: the destination */
    uint8_t l4;                    /* the transport whose port and checksum follow: TCP, UDP, ICMP, or 0 */
    int8_t port_at;                /* offset of the port (or ICMP identifier) rewritten, -1 for none */
    uint8_t restore, restore_at, count_payload, flags;
    uint8_t addr[4];
    uint8_t eth[12];               /* the next hop's MAC, then the router's */
    uint16_t port, ip_delta, l4_delta, addr_delta, restore_value;
    double arp_expires;
    uint64_t frames, segments, ip_bytes, payload_bytes;   /* since the last sync */
    double last_now;
    PyObject *target;              /* the session or flow counted (a strong reference) */
    PyObject *helper;              /* what its helper counts, or NULL */
    PyObject *owner[OWNERS];       /* strong references, NULL where unused */
    struct Entry *next_dirty;
} Entry;

typedef struct {
    PyObject *owner;               /* a strong reference */
    Entry **entries;
    Py_ssize_t n, capacity;
} Owner;

typedef struct {
    PyObject_HEAD
    Entry **slots;                 /* open addressing, linear probing; NULL empty, TOMBSTONE deleted */
    size_t capacity, used, tombstones;
    Owner **owners;                /* the same, by owner */
    size_t owner_capacity, owners_used, owner_tombstones;
    Entry *dirty;                  /* entries used since the last sync (removed ones included, freed then) */
    uint8_t mac[2][6];
    uint32_t lan_ip, lan_net, lan_mask, lan_bcast, wan_ip, wan_bcast;
    unsigned mtu[2];
    uint64_t hits, misses[MISS_COUNT];
    uint64_t frames_in[2], bytes_in[2];
} FlowCache;

extern const char *MISS_NAMES[MISS_COUNT];

/* table.c */
int table_init(FlowCache *fc);
void table_free(FlowCache *fc);
Entry *table_lookup(FlowCache *fc, const Key *k);
int table_insert(FlowCache *fc, Entry *e);
int table_remove(FlowCache *fc, const Key *k);
void table_withdraw(FlowCache *fc, PyObject *owner);
size_t table_withdraw_mac(FlowCache *fc, int port, const uint8_t *mac);
void table_clear(FlowCache *fc);
int table_owns(FlowCache *fc, PyObject *owner);
PyObject *table_keys(FlowCache *fc);
void entry_release(Entry *e);

/* forward.c */
int forward_frame(FlowCache *fc, int port, uint8_t *f, size_t len, double now, size_t *wire_len);

#endif
