/*
 * One frame through the flow cache: every check the Python path makes before it rewrites an established flow's
 * frame (dataplane/router.py, dataplane/forward.py, the helpers' per-packet hooks), then the rewrite Python made,
 * in place.  A frame that fails a check, or has no entry, is a miss: it is left untouched for Python.
 */

#include "flowcache.h"

const char *MISS_NAMES[MISS_COUNT] = {
    "short", "not_ipv4", "other_mac", "ip_header", "ip_checksum", "address", "ttl", "fragment", "protocol",
    "tcp_flags", "payload", "no_entry", "mtu", "arp",
};

/* -- checksums (RFC 1071, RFC 1624) --------------------------------------------------------------------- */

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

/* HC' = ~(~HC + delta) (RFC 1624 eq. 3), folded twice as the Python does. */
static inline uint16_t csum_update(uint16_t csum, uint16_t delta) {
    uint32_t x = (uint32_t)(~csum & 0xFFFF) + delta;
    x = (x & 0xFFFF) + (x >> 16);
    x = (x & 0xFFFF) + (x >> 16);
    return (uint16_t)(~x & 0xFFFF);
}

/* A NEEDS_CSUM partial sum is not complemented: the delta added, folded. */
static inline uint16_t partial_update(uint16_t partial, uint16_t delta) {
    uint32_t x = (uint32_t)partial + delta;
    x = (x & 0xFFFF) + (x >> 16);
    return (uint16_t)((x & 0xFFFF) + (x >> 16));
}

static inline uint16_t word_delta(uint16_t old, uint16_t new) {
    uint32_t x = (uint32_t)(~old & 0xFFFF) + new;
    x = (x & 0xFFFF) + (x >> 16);
    return (uint16_t)((x & 0xFFFF) + (x >> 16));
}

/* RFC 1071: a header's one's complement sum is 0xFFFF when its checksum is right. */
static int header_ok(const uint8_t *h) {
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2)
        sum += be16(h + i);
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return sum == 0xFFFF;
}

/* -- what the Python path checks ------------------------------------------------------------------------ */

static inline int unicast(uint32_t a) {
    uint32_t first = a >> 24;
    return first > 0 && first < 224 && first != 127 && a != 0xFFFFFFFFu;
}

/* ICMP query messages (RFC 792): the requests a LAN host sends, the replies the WAN answers with. */
static inline int icmp_request(uint8_t type) { return type == 8 || type == 13 || type == 15 || type == 17; }
static inline int icmp_reply(uint8_t type) { return type == 0 || type == 14 || type == 16 || type == 18; }

/* The segments a GSO super-frame stands for (forward._segments). */
static uint64_t segments_of(const uint8_t *f, unsigned tot_len) {
    if (!f[1])
        return 1;
    uint16_t hdr_len, gso_size;
    memcpy(&hdr_len, f + 2, 2);
    memcpy(&gso_size, f + 4, 2);
    if (!gso_size)
        return 1;
    long payload = (long)tot_len + 14 - hdr_len;
    long n = payload > 0 ? (payload + gso_size - 1) / gso_size : 0;
    return n > 1 ? (uint64_t)n : 1;
}

/* The L2TP header at ``at`` (RFC 2661 §3.1) as the helper's parse_header reads it: a data message's Tunnel ID
 * offset and its length, or -1 for anything the helper would not count as a data message of a tunnel. */
static int l2tp_data(const uint8_t *f, unsigned at, unsigned size, unsigned *tunnel_at, unsigned *length) {
    if (size < 6)
        return -1;
    uint16_t flags = be16(f + at);
    if ((flags & 0x000F) != 2 || (flags & 0x8000))
        return -1;
    unsigned i = at + 2, end = at + size;
    if (flags & 0x4000) {
        unsigned len = be16(f + i);
        if (len < 8 || len > size)
            return -1;
        end = at + len;
        i += 2;
    }
    *tunnel_at = i;
    i += 4 + ((flags & 0x0800) ? 4 : 0);
    if (flags & 0x0200) {
        if (i + 2 > end)
            return -1;
        i += 2 + be16(f + i);
    }
    if (i > end || *tunnel_at + 4 > end)
        return -1;
    *length = end - at;
    return 0;
}

/* Rewrite a 16-bit word of a UDP payload and follow it in the checksum (helpers/l2tp_wire.write_u16). */
static void udp_payload_u16(uint8_t *f, unsigned l4, unsigned at, uint16_t value) {
    if (f[0] & NEEDS_CSUM) {
        put16(f + at, value);
        return;
    }
    uint16_t old = be16(f + at);
    if (old == value)
        return;
    put16(f + at, value);
    uint16_t csum = be16(f + l4 + 6);
    if (!csum)
        return;
    if ((at - l4) & 1) {
        old = (uint16_t)(old << 8 | old >> 8);
        value = (uint16_t)(value << 8 | value >> 8);
    }
    uint16_t updated = csum_update(csum, word_delta(old, value));
    put16(f + l4 + 6, updated ? updated : 0xFFFF);
}

/* -- the rewrite ---------------------------------------------------------------------------------------- */

/* The transport's port (or ICMP identifier) and checksum, as forward_out and forward_in rewrite them. */
static void rewrite_transport(const Entry *e, uint8_t *f, unsigned l4) {
    if (e->port_at >= 0)
        put16(f + l4 + e->port_at, e->port);
    if (e->l4 == PROTO_ICMP) {        /* no pseudo-header: the identifier's delta alone; a partial sum is the kernel's */
        if (!(f[0] & NEEDS_CSUM))
            put16(f + l4 + 2, csum_update(be16(f + l4 + 2), e->l4_delta));
        return;
    }
    unsigned at = l4 + (e->l4 == PROTO_TCP ? 16 : 6);
    uint16_t value = be16(f + at);
    if (f[0] & NEEDS_CSUM) {
        put16(f + at, partial_update(value, e->addr_delta));
    } else if (value || e->l4 == PROTO_TCP) {
        uint16_t x = csum_update(value, e->l4_delta);
        put16(f + at, x || e->l4 == PROTO_TCP ? x : 0xFFFF);   /* RFC 768: UDP sends 0 as 0xFFFF */
    }
}

#define MISS(reason) do { fc->misses[reason]++; return -1; } while (0)

/* The key of a frame from ``port``, after the checks of router._ipv4, _from_lan and _from_wan; its IPv4 header's
 * total length in ``*tot_len``; or the reason it is Python's. */
static int frame_key(FlowCache *fc, int port, const uint8_t *f, size_t len, Key *k, unsigned *tot_len) {
    if (len < IPOFF + 20)
        return MISS_SHORT;
    if (f[24] != 0x08 || f[25] != 0x00)
        return MISS_NOT_IPV4;
    if (memcmp(f + VNET, fc->mac[port], 6) != 0)
        return MISS_OTHER_MAC;
    const uint8_t *ip = f + IPOFF;
    *tot_len = be16(ip + 2);
    if (ip[0] != 0x45 || *tot_len < 20 || IPOFF + (size_t)*tot_len > len)
        return MISS_IP_HEADER;
    if (!header_ok(ip))
        return MISS_IP_CHECKSUM;
    uint32_t src = be32(ip + 12), dst = be32(ip + 16);
    if (port == 0) {
        if ((src & fc->lan_mask) != fc->lan_net || src == fc->lan_ip || src == fc->lan_bcast || !unicast(src) ||
            dst == fc->lan_ip || dst == fc->wan_ip || dst == fc->lan_bcast || !unicast(dst) ||
            (dst & fc->lan_mask) == fc->lan_net)
            return MISS_ADDRESS;
    } else if (dst != fc->wan_ip || (src & fc->lan_mask) == fc->lan_net || src == fc->wan_bcast || !unicast(src)) {
        return MISS_ADDRESS;
    }
    if (ip[8] <= 1)
        return MISS_TTL;
    if (be16(ip + 6) & 0x3FFF)
        return MISS_FRAGMENT;
    const uint8_t *l4 = ip + 20;
    unsigned size = *tot_len - 20;
    *k = (Key){.src = src, .dst = dst, .port = (uint8_t)port, .proto = ip[9]};
    switch (ip[9]) {
    case PROTO_TCP:
    case PROTO_UDP:
        if (size < (ip[9] == PROTO_TCP ? 20u : 8u))
            return MISS_PAYLOAD;
        if (ip[9] == PROTO_TCP && (l4[13] & 7))
            return MISS_TCP_FLAGS;
        k->sport = be16(l4);
        k->dport = be16(l4 + 2);
        return -1;
    case PROTO_ICMP:              /* queries only: the identifier stands for the port the NAT keys on */
        if (size < 8 || !(port == 0 ? icmp_request(l4[0]) : icmp_reply(l4[0])))
            return MISS_PROTOCOL;
        if (port == 0)
            k->sport = be16(l4 + 4);
        else
            k->dport = be16(l4 + 4);
        return -1;
    case PROTO_GRE:               /* enhanced GRE v1 with a key, PPP (RFC 2637 §4.1), as the PPTP helper checks */
        if (size < 8 || (l4[0] & 0xE0) != 0x20 || (l4[1] & 0x07) != 1 || l4[2] != 0x88 || l4[3] != 0x0B)
            return MISS_PAYLOAD;
        k->id = be16(l4 + 6);
        return -1;
    case PROTO_ESP:               /* SPI and sequence number at least, SPI not 0 (RFC 4303 §2.1) */
        if (size < 8 || !be32(l4))
            return MISS_PAYLOAD;
        k->id = be32(l4);
        return -1;
    default:
        return MISS_PROTOCOL;
    }
}

/* Forward one frame of ``len`` bytes from ``port`` in place: its output port, or -1 (a miss, the frame
 * untouched). ``*wire_len``: the bytes to send (Ethernet padding left out, as Python trims it). */
int forward_frame(FlowCache *fc, int port, uint8_t *f, size_t len, double now, size_t *wire_len) {
    Key k;
    unsigned tot_len = 0;
    int reason = frame_key(fc, port, f, len, &k, &tot_len);
    if (reason >= 0)
        MISS(reason);
    Entry *e = table_lookup(fc, &k);
    if (e == NULL)
        MISS(MISS_NO_ENTRY);
    unsigned l4 = IPOFF + 20, payload = l4 + 8, payload_size = tot_len - 28, l2tp_len = 0, tunnel_at = 0;
    if (e->marker) {              /* the flows of this UDP 5-tuple are told apart by an ID in the payload */
        if (e->split == SPLIT_NATT_SPI) {
            if (payload_size < 8 || !be32(f + payload))
                MISS(MISS_PAYLOAD);
            k.id = be32(f + payload);
        } else {
            if (l2tp_data(f, payload, payload_size, &tunnel_at, &l2tp_len) < 0)
                MISS(MISS_PAYLOAD);
            k.id = be16(f + tunnel_at);
        }
        e = table_lookup(fc, &k);
        if (e == NULL || e->marker)
            MISS(MISS_NO_ENTRY);
    }
    int out = e->out_port;
    if (tot_len > fc->mtu[out] && !f[1])
        MISS(MISS_MTU);
    if (now > e->arp_expires)
        MISS(MISS_ARP);

    /* The helper's payload rewrite first, as the helper's hook runs before the NAT's rewrite. */
    if (e->restore == RESTORE_AT && e->restore_at + 2u <= tot_len - 20)
        put16(f + l4 + e->restore_at, e->restore_value);   /* a portless protocol's ID, under no checksum (GRE v1) */
    else if (e->restore == RESTORE_SPLIT_ID)
        udp_payload_u16(f, l4, tunnel_at, e->restore_value);
    uint8_t *ip = f + IPOFF;
    memcpy(f + VNET, e->eth, 12);
    memcpy(ip + e->addr_at, e->addr, 4);
    ip[8] -= 1;
    put16(ip + 10, csum_update(be16(ip + 10), e->ip_delta));
    if (e->l4)
        rewrite_transport(e, f, l4);

    if (!e->dirty) {
        e->dirty = 1;
        e->next_dirty = fc->dirty;
        fc->dirty = e;
    }
    e->frames++;
    e->segments += segments_of(f, tot_len);
    e->ip_bytes += tot_len;
    e->payload_bytes += e->count_payload ? l2tp_len : 0;
    e->last_now = now;
    fc->hits++;
    fc->frames_in[port]++;
    fc->bytes_in[port] += len;
    *wire_len = IPOFF + tot_len;
    return out;
}
