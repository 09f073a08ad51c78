/* The native fast path of the udp and userspace VXLAN data planes: shared definitions.
 *
 * The Python engine (backends/_datapath.py) and codecs (backends/udp.py, backends/vxlan.py)
 * are the specification; everything here makes the same decisions on the same bytes, and
 * tests/unit/test_native.py holds the two to byte-identical output. What this code does not
 * handle (ICMP errors, ARP for the VTEP, fragments, odd super-packets) it hands to the
 * Python codec as a "slow" packet, untouched.
 *
 * Layout of the sources, cut along the seams wireguard-go's data path has:
 *   fastpath.h  shared structures, checksums (RFC 1071, computed in native byte order:
 *               the ones'-complement sum commutes with a byte swap, RFC 1071 2(B))
 *   tun.c       the TUN side: the virtio-net header, TCP super-packets cut into segments,
 *               GRO batches planned and joined, the TUN write (pure but that write)
 *   udp.c       the UDP side: the outbox and its GSO sends (sendmmsg), GRO receives
 *   codec.c     the peer table and the per-packet decisions of both codecs (pure)
 *   engine.c    moves reads through the codec into the outbox, and received groups
 *               through the codec into the TUN; the I/O thread, the slow-path queue
 *   module.c    the Python bindings
 */
#ifndef FLANNELD_FASTPATH_H
#define FLANNELD_FASTPATH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <netinet/in.h>
#include <sys/uio.h>

/* what a packet comes to: the values of backends/_datapath.py's Action, and SLOW */
enum fp_action {
    FP_SEND = 0, FP_REPLY = 1, FP_DROP = 2, FP_SEND_MANY = 3, FP_WRITE = 4, FP_ANSWER = 5,
    FP_SLOW = 6, /* not decided here: the Python codec decides, on the untouched bytes */
};

/* why a packet was not forwarded: the values of backends/_datapath.py's Drop */
enum fp_drop {
    FP_NONE = 0, FP_RUNT, FP_NOT_IPV4, FP_MALFORMED, FP_NO_ROUTE, FP_TTL_EXPIRED, FP_NOT_PEER,
    FP_NOT_OUR_SUBNET, FP_OVERSIZED, FP_TUN_QUEUE_FULL, FP_SOCKET_QUEUE_FULL, FP_SEND_ERROR,
    FP_TUN_WRITE_ERROR, FP_WRONG_VNI, FP_WRONG_MAC, FP_NOT_FOR_US, FP_SLOW_QUEUE_FULL,
    FP_DROP_REASONS
};

enum fp_kind { FP_UDP = 0, FP_VXLAN = 1 };

#define FP_VXLAN_HEADROOM 22    /* VXLAN (8) + Ethernet (14), tun/vxlan.py's HEADROOM */
#define FP_OUTER_OVERHEAD 50    /* outer IPv4 + UDP + HEADROOM */
#define FP_MAX_INNER (65535 - FP_OUTER_OVERHEAD)
#define FP_VNET_HDR_LEN 10      /* the kernel's struct virtio_net_hdr */
#define FP_NEEDS_CSUM 1
#define FP_GSO_NONE 0
#define FP_GSO_TCPV4 1
#define FP_GSO_ECN 0x80
#define FP_MAX_SEGMENTS 64      /* UDP GSO: datagrams per send */
#define FP_MAX_GSO_BYTES (65507 - 8)
#define FP_MIN_JOIN 4           /* fewer received segments are written one by one */
#define FP_SMALL 512            /* received datagrams this small are never joined */
#define FP_MAX_CUT 1024         /* super-packets of more segments go to the slow path */
#define FP_TCP_FIN 0x01
#define FP_TCP_SYN 0x02
#define FP_TCP_RST 0x04
#define FP_TCP_PSH 0x08
#define FP_TCP_ACK 0x10
#define FP_TCP_CWR 0x80

/* a peer subnet: where its datagrams go and, for VXLAN, the header in front of them */
typedef struct {
    uint32_t ip;                /* PublicIP, host order */
    uint16_t port;
    uint8_t header[FP_VXLAN_HEADROOM];
} fp_route;

typedef struct {
    uint32_t key;
    uint32_t used;
    fp_route route;
} fp_route_slot;

typedef struct {
    uint32_t ip;
    uint32_t count;             /* 0: the slot is free */
} fp_peer_slot;

/* the codec: configuration and the peer table, shared by the I/O thread and Python */
typedef struct {
    int kind;
    int headroom;
    uint32_t own_net;
    uint32_t mask;
    int subnet_len;
    int mtu;
    uint32_t vni;
    uint8_t own_mac[6];
    pthread_mutex_t lock;       /* guards the tables */
    fp_route_slot *routes;
    uint32_t route_cap, route_count;
    fp_peer_slot *peers;
    uint32_t peer_cap, peer_count;
} fp_codec;

/* one decision, as the Python codecs return it */
typedef struct {
    int action;
    int reason;
    uint32_t flow;              /* SEND: the flow hash that picks the sending socket */
    uint32_t length;            /* WRITE: the inner packet's length */
    fp_route route;             /* SEND: a copy of the peer's entry */
} fp_verdict;

/* counters of one direction (the I/O thread alone writes them; readers load them relaxed) */
typedef struct {
    uint64_t drops[FP_DROP_REASONS];
    uint64_t tx_packets, tx_bytes, rx_packets, rx_bytes;
    uint64_t gso_sends, gso_segments, gro_batches, gro_segments;
    uint64_t tso_packets, tso_segments, tso_cuts;
    uint64_t joined_packets, joined_segments;
    uint64_t checksums_finished, checksums_completed;
    uint64_t slow_packets;
} fp_counters;

/* ---- checksums (RFC 1071), summed in native byte order -------------------------------- */

/* The unfolded sum of data[0:len] as native 16-bit words (an odd last byte as the first byte
 * of a zero-padded word), added to `sum`. 32-bit loads into a 64-bit accumulator: a 32-bit
 * word is congruent to the sum of its halves modulo 0xFFFF, so folding gives the 16-bit sum. */
static inline uint64_t fp_sum(const uint8_t *data, size_t len, uint64_t sum)
{
    uint64_t a = 0, b = 0;
    while (len >= 16) {
        uint32_t w[4];
        memcpy(w, data, 16);
        a += (uint64_t)w[0] + w[1];
        b += (uint64_t)w[2] + w[3];
        data += 16;
        len -= 16;
    }
    sum += a + b;
    while (len >= 4) {
        uint32_t w;
        memcpy(&w, data, 4);
        sum += w;
        data += 4;
        len -= 4;
    }
    if (len >= 2) {
        uint16_t w;
        memcpy(&w, data, 2);
        sum += w;
        data += 2;
        len -= 2;
    }
    if (len) {
        uint8_t pad[2] = {data[0], 0};
        uint16_t w;
        memcpy(&w, pad, 2);
        sum += w;
    }
    return sum;
}

/* the 16-bit ones'-complement fold of a native-order sum (0 only for a zero sum) */
static inline uint16_t fp_fold(uint64_t sum)
{
    sum = (sum & 0xFFFFFFFFu) + (sum >> 32);
    sum = (sum & 0xFFFFFFFFu) + (sum >> 32);
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)sum;
}

/* a native-order 16-bit value as network order bytes at p */
static inline void fp_put_native16(uint8_t *p, uint16_t native)
{
    memcpy(p, &native, 2);
}

static inline uint16_t fp_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t fp_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void fp_put_be16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xFF; }
static inline void fp_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = (v >> 16) & 0xFF; p[2] = (v >> 8) & 0xFF; p[3] = v & 0xFF;
}
/* a host-order 16-bit value as the native-order word that holds it in network order */
static inline uint16_t fp_native_of(uint16_t value)
{
    uint8_t p[2] = {value >> 8, value & 0xFF};
    uint16_t w;
    memcpy(&w, p, 2);
    return w;
}

/* RFC 1071 checksum of data[0:len], as network-order bytes written at out */
static inline void fp_checksum_into(uint8_t *out, const uint8_t *data, size_t len,
                                    uint64_t sum)
{
    fp_put_native16(out, (uint16_t)~fp_fold(fp_sum(data, len, sum)));
}

/* the IPv4 header checksum of the 20-byte header at ip, written in place */
static inline void fp_set_ip_checksum(uint8_t *ip)
{
    ip[10] = ip[11] = 0;
    fp_checksum_into(ip + 10, ip, 20, 0);
}

/* ---- codec.c ------------------------------------------------------------------------ */
int fp_codec_init(fp_codec *c, int kind, uint32_t own_net, int subnet_len, int mtu,
                  uint32_t vni, const uint8_t own_mac[6]);
void fp_codec_free(fp_codec *c);
int fp_codec_add(fp_codec *c, uint32_t net, const fp_route *route);  /* -1: no memory */
void fp_codec_remove(fp_codec *c, uint32_t net);
/* with c->lock held */
const fp_route *fp_lookup(const fp_codec *c, uint32_t net);
int fp_is_peer(const fp_codec *c, uint32_t ip);
void fp_from_tun(fp_codec *c, uint8_t *buf, uint32_t n, fp_verdict *v);
void fp_from_net(fp_codec *c, uint8_t *buf, uint32_t n, uint32_t src, fp_verdict *v,
                 fp_counters *counters);
uint32_t fp_flow_hash(const uint8_t *packet, uint32_t n);

/* ---- tun.c -------------------------------------------------------------------------- */

/* the kernel's struct virtio_net_hdr, as the TUN hands it over */
typedef struct {
    uint8_t flags, gso_type;
    uint16_t hdr_len, gso_size, csum_start, csum_offset;
} fp_vnet;

/* parse a 10-byte header; nonzero if it asks for anything (a checksum, a cut) */
int fp_vnet_parse(const uint8_t *meta, fp_vnet *v);
/* NEEDS_CSUM: sum packet[start:n] into the field at start + offset; 0 if it does not fit */
int fp_finish_checksum(uint8_t *packet, uint32_t n, uint16_t start, uint16_t offset);
int fp_tun_write(int fd, const struct iovec *iov, int iovcnt);  /* 0 or an errno */
uint32_t fp_tso_header_len(const uint8_t *packet, uint32_t n, uint32_t gso_size);
/* cut the super-packet (prefix of h bytes at buf, then n bytes of IPv4/TCP with header
 * length hl) into segments of gso_size payload bytes, back to back in out (stride bytes each
 * but the last); returns the bytes written, 0 if out is too small */
size_t fp_cut(const uint8_t *buf, uint32_t h, uint32_t n, uint32_t hl, uint32_t gso_size,
              uint8_t *out, size_t room, uint32_t *count);

typedef struct {
    uint32_t first, count;
} fp_run;

/* which segments of a GRO batch (buf[0:n], rows of `segment` bytes, each an inner IPv4
 * packet at h) continue one TCP stream: runs of two or more, at most `max_runs`; returns
 * how many */
int fp_plan_runs(const uint8_t *buf, uint32_t n, uint32_t segment, uint32_t h, fp_run *runs,
                 int max_runs);
/* the joined super-packet's headers (into hdr: virtio-net header, then the IPv4 + TCP
 * header) and its payload as iovecs into buf; returns the number of iovecs (hdr is the
 * first two), the packet's total length in *total */
int fp_join(const uint8_t *buf, uint32_t n, uint32_t segment, uint32_t h, fp_run run,
            uint8_t *hdr, struct iovec *iov, uint32_t *total);

/* ---- udp.c -------------------------------------------------------------------------- */
#define FP_OUTBOX_BYTES (1 << 19)
#define FP_OUTBOX_MSGS 2048
#define FP_MAX_SENDERS 64

/* datagrams waiting to leave: rows of the buffer grouped into (GSO) sends */
typedef struct {
    uint32_t off, len;              /* where in buf, how many bytes */
    uint32_t seg, count;            /* datagram size (the last may be shorter), how many */
    uint32_t ip;                    /* destination, host order */
    uint16_t port;
    uint8_t sock, open;             /* which sender; may more datagrams join */
} fp_msg;

typedef struct {
    uint8_t *buf;
    size_t used;
    fp_msg *msgs;
    int nmsgs;
} fp_outbox;

/* the sending sockets (the flow hash picks one) and whether GSO is still in use */
typedef struct {
    int fds[FP_MAX_SENDERS];
    int nfds;
    int gso;
    int refused;                    /* set once the kernel refused a GSO send */
} fp_udp;

/* one receive: n bytes of datagrams of `segment` bytes each but the last, from src */
typedef struct {
    uint32_t n, segment, src;
} fp_datagram;

uint32_t fp_per_send(uint32_t size);  /* datagrams of `size` bytes one GSO send carries */
int fp_outbox_init(fp_outbox *out);
void fp_outbox_free(fp_outbox *out);
/* rows of `stride` bytes (the last may be shorter) at out->buf + off, for `route` from
 * sender `sock`: appended to the last send while it takes them (with gso) */
void fp_outbox_add(fp_outbox *o, int gso, int sock, const fp_route *route, size_t off,
                   size_t len, uint32_t stride);
void fp_count_sent(fp_counters *c, const fp_msg *m);
void fp_udp_flush(fp_udp *u, fp_outbox *o, fp_counters *c);  /* send all, empty it */
int fp_udp_recv(int fd, uint8_t *buf, size_t room, int gro, fp_datagram *d);  /* 0/errno */

#endif
