/* The peer table and the per-packet decisions of the udp and VXLAN codecs: the same checks,
 * in the same order, with the same verdicts as UDPCodec and VXLANCodec (backends/udp.py,
 * backends/vxlan.py) and the helpers they use (tun/packet.py, tun/vxlan.py). Pure: no I/O.
 */
#include <stdlib.h>
#include "fastpath.h"

#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF
#define VXLAN_FLAG_I 0x08
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_ARP 0x0806
#define PROTO_ICMP 1

/* ---- the peer table: open addressing, linear probing, backward-shift deletion ------- */

static inline uint32_t slot_of(uint32_t key, uint32_t cap)
{
    return (uint32_t)((key * 0x9E3779B1u) >> 7) & (cap - 1);  /* cap: a power of two */
}

static int grow_routes(fp_codec *c)
{
    uint32_t cap = c->route_cap ? c->route_cap * 2 : 64;
    fp_route_slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (uint32_t i = 0; i < c->route_cap; i++) {
        if (!c->routes[i].used)
            continue;
        uint32_t j = slot_of(c->routes[i].key, cap);
        while (slots[j].used)
            j = (j + 1) & (cap - 1);
        slots[j] = c->routes[i];
    }
    free(c->routes);
    c->route_cap = cap;
    c->routes = slots;
    return 0;
}

static int grow_peers(fp_codec *c)
{
    uint32_t cap = c->peer_cap ? c->peer_cap * 2 : 64;
    fp_peer_slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (uint32_t i = 0; i < c->peer_cap; i++) {
        if (!c->peers[i].count)
            continue;
        uint32_t j = slot_of(c->peers[i].ip, cap);
        while (slots[j].count)
            j = (j + 1) & (cap - 1);
        slots[j] = c->peers[i];
    }
    free(c->peers);
    c->peer_cap = cap;
    c->peers = slots;
    return 0;
}

const fp_route *fp_lookup(const fp_codec *c, uint32_t net)
{
    if (!c->route_count)
        return NULL;
    for (uint32_t j = slot_of(net, c->route_cap);; j = (j + 1) & (c->route_cap - 1)) {
        if (!c->routes[j].used)
            return NULL;
        if (c->routes[j].key == net)
            return &c->routes[j].route;
    }
}

int fp_is_peer(const fp_codec *c, uint32_t ip)
{
    if (!c->peer_count)
        return 0;
    for (uint32_t j = slot_of(ip, c->peer_cap);; j = (j + 1) & (c->peer_cap - 1)) {
        if (!c->peers[j].count)
            return 0;
        if (c->peers[j].ip == ip)
            return 1;
    }
}

static fp_peer_slot *peer_slot(fp_codec *c, uint32_t ip)
{
    for (uint32_t j = slot_of(ip, c->peer_cap);; j = (j + 1) & (c->peer_cap - 1))
        if (!c->peers[j].count || c->peers[j].ip == ip)
            return &c->peers[j];
}

/* remove slot i of an open-addressing table, moving later entries of its cluster back */
#define BACKWARD_SHIFT(slots, cap, i, is_used, key_of, clear)                               \
    do {                                                                                    \
        uint32_t hole = (i), next = ((i) + 1) & ((cap) - 1);                                \
        while (is_used(slots[next])) {                                                      \
            uint32_t home = slot_of(key_of(slots[next]), (cap));                            \
            /* the entry may move into the hole if its home is not in (hole, next] */       \
            if (((next - home) & ((cap) - 1)) >= ((next - hole) & ((cap) - 1))) {           \
                slots[hole] = slots[next];                                                  \
                hole = next;                                                                \
            }                                                                               \
            next = (next + 1) & ((cap) - 1);                                                \
        }                                                                                   \
        clear(slots[hole]);                                                                 \
    } while (0)

#define ROUTE_USED(s) ((s).used)
#define ROUTE_KEY(s) ((s).key)
#define ROUTE_CLEAR(s) memset(&(s), 0, sizeof(s))
#define PEER_USED(s) ((s).count)
#define PEER_KEY(s) ((s).ip)
#define PEER_CLEAR(s) memset(&(s), 0, sizeof(s))

static void forget_owner(fp_codec *c, uint32_t ip)
{
    fp_peer_slot *slot = peer_slot(c, ip);
    if (!slot->count)
        return;
    if (--slot->count)
        return;
    uint32_t i = (uint32_t)(slot - c->peers);
    BACKWARD_SHIFT(c->peers, c->peer_cap, i, PEER_USED, PEER_KEY, PEER_CLEAR);
    c->peer_count--;
}

void fp_codec_remove(fp_codec *c, uint32_t net)
{
    if (!c->route_count)
        return;
    uint32_t j = slot_of(net, c->route_cap);
    while (c->routes[j].used && c->routes[j].key != net)
        j = (j + 1) & (c->route_cap - 1);
    if (!c->routes[j].used)
        return;
    forget_owner(c, c->routes[j].route.ip);
    BACKWARD_SHIFT(c->routes, c->route_cap, j, ROUTE_USED, ROUTE_KEY, ROUTE_CLEAR);
    c->route_count--;
}

int fp_codec_add(fp_codec *c, uint32_t net, const fp_route *route)
{
    fp_codec_remove(c, net);
    if ((c->route_count + 1) * 2 > c->route_cap && grow_routes(c))
        return -1;
    if ((c->peer_count + 1) * 2 > c->peer_cap && grow_peers(c))
        return -1;
    uint32_t j = slot_of(net, c->route_cap);
    while (c->routes[j].used)
        j = (j + 1) & (c->route_cap - 1);
    c->routes[j].key = net;
    c->routes[j].used = 1;
    c->routes[j].route = *route;
    c->route_count++;
    fp_peer_slot *slot = peer_slot(c, route->ip);
    if (!slot->count) {
        slot->ip = route->ip;
        c->peer_count++;
    }
    slot->count++;
    return 0;
}

int fp_codec_init(fp_codec *c, int kind, uint32_t own_net, int subnet_len, int mtu,
                  uint32_t vni, const uint8_t own_mac[6])
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->headroom = kind == FP_VXLAN ? FP_VXLAN_HEADROOM : 0;
    c->own_net = own_net;
    c->subnet_len = subnet_len;
    c->mask = subnet_len ? (uint32_t)(0xFFFFFFFFu << (32 - subnet_len)) : 0;
    c->mtu = mtu;
    c->vni = vni;
    memcpy(c->own_mac, own_mac, 6);
    return pthread_mutex_init(&c->lock, NULL);
}

void fp_codec_free(fp_codec *c)
{
    free(c->routes);
    free(c->peers);
    c->routes = NULL;
    c->peers = NULL;
    pthread_mutex_destroy(&c->lock);
}

/* ---- packet helpers: tun/packet.py ---------------------------------------------------- */

/* decrement_ttl: TTL - 1 with the RFC 1624 incremental checksum; 0 (untouched) if the TTL
 * would reach 0 */
static inline int decrement_ttl(uint8_t *ip)
{
    if (ip[8] <= 1)
        return 0;
    ip[8]--;
    uint32_t total = (~fp_be16(ip + 10) & 0xFFFFu) + 0xFEFF;
    total = (total & 0xFFFF) + (total >> 16);
    fp_put_be16(ip + 10, (uint16_t)~total);
    return 1;
}

/* check_ipv4: the packet's total length, or 0 for anything check_ipv4 refuses */
static inline uint32_t check_ipv4(const uint8_t *ip, uint32_t n)
{
    if (n < 20 || ip[0] >> 4 != 4)
        return 0;
    uint32_t ihl = (ip[0] & 0x0F) * 4u;
    if (ihl < 20 || ihl > n)
        return 0;
    uint32_t total = fp_be16(ip + 2);
    if (total < ihl || total > n)
        return 0;
    if (fp_sum(ip, ihl, 0) % 0xFFFF)  /* an intact header sums to 0 modulo 0xFFFF */
        return 0;
    return total;
}

/* wants_icmp_error: flannel's rule, no ICMP error about ICMP or a non-first fragment */
static inline int wants_icmp_error(const uint8_t *ip)
{
    return ip[9] != PROTO_ICMP && !(fp_be16(ip + 6) & IP_OFFSET);
}

/* pseudo_header_sum: folded, not inverted, as a host-order value */
static inline uint32_t pseudo_header_sum(const uint8_t *ip, uint32_t proto, uint32_t length)
{
    uint32_t total = fp_be16(ip + 12) + fp_be16(ip + 14) + fp_be16(ip + 16) + fp_be16(ip + 18)
                     + proto + length;
    while (total >> 16)
        total = (total & 0xFFFF) + (total >> 16);
    return total;
}

/* complete_partial_checksum: finish a TCP/UDP checksum that holds exactly the pseudo-header
 * sum (a sender's checksum offload left it unfinished); 1 if it did */
static int complete_partial_checksum(uint8_t *ip, uint32_t total)
{
    uint32_t ihl = (ip[0] & 0x0F) * 4u, field;
    if (ip[9] == 6)
        field = ihl + 16;
    else if (ip[9] == 17)
        field = ihl + 6;
    else
        return 0;
    if (fp_be16(ip + 6) & (IP_MF | IP_OFFSET) || total < field + 2)
        return 0;
    if (fp_be16(ip + field) != pseudo_header_sum(ip, ip[9], total - ihl))
        return 0;
    uint16_t value = (uint16_t)~fp_fold(fp_sum(ip + ihl, total - ihl, 0));
    if (ip[9] == 17 && value == 0)
        value = 0xFFFF;
    fp_put_native16(ip + field, value);
    return 1;
}

/* tun/vxlan.py's flow_hash over the inner packet p[0:n] */
uint32_t fp_flow_hash(const uint8_t *p, uint32_t n)
{
    uint32_t proto = p[9];
    uint32_t h = fp_be32(p + 12) ^ fp_be32(p + 16) ^ proto;
    uint32_t ihl = (p[0] & 0x0F) * 4u;
    if ((proto == 6 || proto == 17) && n >= ihl + 4)
        h ^= (uint32_t)fp_be16(p + ihl) << 16 | fp_be16(p + ihl + 2);
    h = (h ^ (h >> 16)) * 0x45D9F3Bu;
    return h ^ (h >> 16);
}

/* ---- the codecs ----------------------------------------------------------------------- */

static inline void verdict(fp_verdict *v, int action, int reason)
{
    v->action = action;
    v->reason = reason;
}

/* UDPCodec.from_tun / VXLANCodec.from_tun: buf holds the headroom, then the n-byte packet */
void fp_from_tun(fp_codec *c, uint8_t *buf, uint32_t n, fp_verdict *v)
{
    uint8_t *ip = buf + c->headroom;
    int udp = c->kind == FP_UDP;
    if (n < 20)
        return verdict(v, FP_DROP, FP_RUNT);
    if (ip[0] >> 4 != 4)
        return verdict(v, FP_DROP, FP_NOT_IPV4);
    const fp_route *route = fp_lookup(c, fp_be32(ip + 16) & c->mask);
    if (!route) {
        /* udp: ICMP Net Unreachable, built by the Python codec */
        if (udp && wants_icmp_error(ip))
            return verdict(v, FP_SLOW, FP_NO_ROUTE);
        return verdict(v, FP_DROP, FP_NO_ROUTE);
    }
    if (udp) {
        if (ip[8] <= 1)  /* ICMP Time Exceeded */
            return verdict(v, wants_icmp_error(ip) ? FP_SLOW : FP_DROP, FP_TTL_EXPIRED);
        if (n > (uint32_t)c->mtu)  /* Fragmentation Needed, or fragments */
            return verdict(v, FP_SLOW, FP_OVERSIZED);
        decrement_ttl(ip);
        v->flow = 0;
    } else {
        if (n > (uint32_t)c->mtu)
            return verdict(v, FP_DROP, FP_OVERSIZED);
        if (!decrement_ttl(ip))
            return verdict(v, FP_DROP, FP_TTL_EXPIRED);
        memcpy(buf, route->header, FP_VXLAN_HEADROOM);
        v->flow = fp_flow_hash(ip, n);
    }
    v->route = *route;
    verdict(v, FP_SEND, FP_NONE);
}

/* UDPCodec.from_net / VXLANCodec.from_net: a datagram of n bytes from src (host order) */
void fp_from_net(fp_codec *c, uint8_t *buf, uint32_t n, uint32_t src, fp_verdict *v,
                 fp_counters *counters)
{
    if (!fp_is_peer(c, src))
        return verdict(v, FP_DROP, FP_NOT_PEER);
    uint8_t *ip = buf;
    uint32_t room = n;
    if (c->kind == FP_VXLAN) {
        if (n < FP_VXLAN_HEADROOM)
            return verdict(v, FP_DROP, FP_MALFORMED);
        if (n > FP_VXLAN_HEADROOM + FP_MAX_INNER)
            return verdict(v, FP_DROP, FP_OVERSIZED);
        if (!(buf[0] & VXLAN_FLAG_I))
            return verdict(v, FP_DROP, FP_MALFORMED);
        if (fp_be32(buf + 4) >> 8 != c->vni)
            return verdict(v, FP_DROP, FP_WRONG_VNI);
        static const uint8_t broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        if (memcmp(buf + 8, c->own_mac, 6) && memcmp(buf + 8, broadcast, 6))
            return verdict(v, FP_DROP, FP_WRONG_MAC);
        uint16_t ethertype = fp_be16(buf + 20);
        if (ethertype == ETHERTYPE_ARP)  /* answered (or not) by the Python codec */
            return verdict(v, FP_SLOW, FP_NONE);
        if (ethertype != ETHERTYPE_IPV4)
            return verdict(v, FP_DROP, FP_NOT_IPV4);
        ip = buf + FP_VXLAN_HEADROOM;
        room = n - FP_VXLAN_HEADROOM;
    }
    uint32_t total = check_ipv4(ip, room);
    if (!total)
        return verdict(v, FP_DROP, FP_MALFORMED);
    if ((fp_be32(ip + 16) & c->mask) != c->own_net)
        return verdict(v, FP_DROP, FP_NOT_OUR_SUBNET);
    if (!decrement_ttl(ip))
        return verdict(v, FP_DROP, FP_TTL_EXPIRED);
    if (c->kind == FP_VXLAN && complete_partial_checksum(ip, total))
        counters->checksums_completed++;
    v->length = total;
    verdict(v, FP_WRITE, FP_NONE);
}
