/* The TUN side: what the virtio-net header asks for (a checksum to finish, a TCP
 * super-packet to cut into segments, as a NIC's TSO would) and, the other way, the segments
 * of a GRO batch joined back into one super-packet (as a NIC's LRO would): the same bytes as
 * tun/offload.py's finish_checksum, segment_tcp4_many, plan_runs and join_run. Pure but for
 * fp_tun_write, the one system call.
 *
 * A joined segment's checksums are verified first: the kernel trusts a super-packet marked
 * NEEDS_CSUM, so a corrupted segment must never be joined (tun/offload.py says why).
 */
#include <errno.h>
#include "fastpath.h"

#define IP_FRAGMENT_BITS 0x3FFF
#define KEPT (0xFF & ~(FP_TCP_FIN | FP_TCP_PSH | FP_TCP_CWR))

int fp_vnet_parse(const uint8_t *meta, fp_vnet *v)
{
    v->flags = meta[0];
    v->gso_type = meta[1];
    v->hdr_len = (uint16_t)(meta[2] | meta[3] << 8);  /* little-endian, as virtio's legacy header */
    v->gso_size = (uint16_t)(meta[4] | meta[5] << 8);
    v->csum_start = (uint16_t)(meta[6] | meta[7] << 8);
    v->csum_offset = (uint16_t)(meta[8] | meta[9] << 8);
    return meta[0] | meta[1];
}

int fp_finish_checksum(uint8_t *packet, uint32_t n, uint16_t start, uint16_t offset)
{
    uint32_t field = (uint32_t)start + offset;
    if (field + 2 > n)
        return 0;
    uint16_t value = (uint16_t)~fp_fold(fp_sum(packet + start, n - start, 0));
    if (value == 0 && packet[0] >> 4 == 4 && packet[9] == 17)
        value = 0xFFFF;  /* RFC 768: a computed zero is sent as all ones */
    fp_put_native16(packet + field, value);
    return 1;
}

uint32_t fp_tso_header_len(const uint8_t *p, uint32_t n, uint32_t gso_size)
{
    if (n < 40 || p[0] != 0x45 || p[9] != 6 || gso_size == 0)
        return 0;
    if (fp_be16(p + 6) & IP_FRAGMENT_BITS)
        return 0;
    uint32_t thl = (p[32] >> 4) * 4u, hl = 20 + thl;
    return thl >= 20 && hl < n ? hl : 0;
}

/* the native-order sum of the pseudo-header words that do not depend on the length */
static inline uint64_t pseudo_addresses(const uint8_t *ip, uint16_t proto)
{
    return fp_sum(ip + 12, 8, 0) + fp_native_of(proto);
}

size_t fp_cut(const uint8_t *buf, uint32_t h, uint32_t n, uint32_t hl, uint32_t gso_size,
              uint8_t *out, size_t room, uint32_t *count)
{
    const uint8_t *packet = buf + h;
    uint32_t k = (n - hl + gso_size - 1) / gso_size;
    uint32_t last = n - hl - (k - 1) * gso_size;
    size_t stride = (size_t)h + hl + gso_size;
    size_t used = (k - 1) * stride + h + hl + last;
    if (used > room)
        return 0;
    uint8_t flags = packet[33];
    int df = packet[6] & 0x40;
    uint16_t ident = fp_be16(packet + 4);
    uint32_t seq = fp_be32(packet + 24);
    uint64_t pseudo = pseudo_addresses(packet, 6);
    for (uint32_t i = 0; i < k; i++) {
        uint8_t *row = out + i * stride, *ip = row + h, *tcp = ip + 20;
        uint32_t length = i + 1 < k ? gso_size : last;
        memcpy(row, buf, h + hl);
        memcpy(ip + hl, packet + hl + (size_t)i * gso_size, length);
        uint16_t total = (uint16_t)(hl + length);
        fp_put_be16(ip + 2, total);
        if (!df)
            fp_put_be16(ip + 4, (uint16_t)(ident + i));
        uint8_t f = flags & KEPT;
        if (i + 1 == k)
            f = flags & (0xFF & ~FP_TCP_CWR);
        if (i == 0 && flags & FP_TCP_CWR)
            f |= FP_TCP_CWR;
        tcp[13] = f;
        fp_put_be32(tcp + 4, seq + i * gso_size);
        fp_set_ip_checksum(ip);
        tcp[16] = tcp[17] = 0;
        uint64_t sum = pseudo + fp_native_of((uint16_t)(total - 20));
        fp_checksum_into(tcp + 16, tcp, total - 20, sum);
    }
    *count = k;
    return used;
}

/* the header bytes (outer header, IPv4, TCP) that must not change from row to row of a
 * run: all but the total length, ID, IP checksum, sequence, TCP checksum, PSH and FIN */
static inline int same_headers(const uint8_t *a, const uint8_t *b, uint32_t h, uint32_t hl)
{
    uint32_t t = h + 20;
    return !memcmp(a, b, h + 2) && !memcmp(a + h + 6, b + h + 6, 4)
        && !memcmp(a + h + 12, b + h + 12, 8) && !memcmp(a + t, b + t, 4)
        && !memcmp(a + t + 8, b + t + 8, 5)
        && !((a[t + 13] ^ b[t + 13]) & (0xFF & ~(FP_TCP_PSH | FP_TCP_FIN)))
        && !memcmp(a + t + 14, b + t + 14, 2) && !memcmp(a + t + 18, b + t + 18, hl - 38);
}

/* the first segment of a run (the rest equal it): IPv4 without options, not a fragment,
 * TCP with this header length, flags ACK (+PSH/FIN), some payload */
static inline int regular(const uint8_t *p, uint32_t thl)
{
    return p[0] == 0x45 && p[9] == 6 && !(fp_be16(p + 6) & IP_FRAGMENT_BITS)
        && (p[32] >> 4) * 4u == thl
        && (p[33] & (0xFF & ~(FP_TCP_PSH | FP_TCP_FIN))) == FP_TCP_ACK;
}

int fp_plan_runs(const uint8_t *buf, uint32_t n, uint32_t segment, uint32_t h, fp_run *runs,
                 int max_runs)
{
    uint32_t count = (n + segment - 1) / segment, t = h + 20;
    if (count < 2 || segment < t + 20)
        return 0;
    const uint8_t *first = buf + h;
    uint32_t thl = (first[32] >> 4) * 4u, hl = 20 + thl;
    if (first[0] != 0x45 || first[9] != 6 || thl < 20 || hl >= segment - h
        || fp_be16(first + 6) & IP_FRAGMENT_BITS)
        return 0;
    int64_t last = (int64_t)n - (int64_t)(count - 1) * segment - h;
    uint32_t mss = segment - h - hl, full = segment - h;
    uint32_t limit = (65535 - hl) / (mss ? mss : 1);
    if (limit < 2)
        limit = 2;
    /* every row's checksums: TCP with the pseudo-header (the first row's addresses, its
     * own length), and the IP header; the rows are padded with zeros to `segment` */
    uint64_t pseudo = pseudo_addresses(first, 6) + 0xFFFF - fp_native_of(20);
    int ok_before = 0, nruns = 0;
    uint32_t start = 0;  /* where the current stretch of linked rows began */
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *row = buf + (size_t)i * segment;
        uint64_t tcp = fp_sum(row + t, segment - t, pseudo) + fp_native_of(fp_be16(row + h + 2));
        int ok = tcp % 0xFFFF == 0 && fp_sum(row + h, 20, 0) % 0xFFFF == 0;
        int linked = 0;
        if (i) {
            const uint8_t *prev = row - segment;
            linked = ok_before && ok && same_headers(prev, row, h, hl)
                && fp_be32(row + t + 4) - fp_be32(prev + t + 4) == mss
                && fp_be16(prev + h + 2) == full && fp_be16(row + h + 2) <= full
                && !(prev[t + 13] & (FP_TCP_PSH | FP_TCP_FIN));
            if (i + 1 == count && (fp_be16(row + h + 2) != last || last <= hl))
                linked = 0;
        }
        ok_before = ok;
        if (i && !linked) {
            /* rows start..i-1 are linked: runs of two or more, at most `limit` each */
            for (uint32_t at = start; i - at >= 2; ) {
                uint32_t size = i - at < limit ? i - at : limit;
                if (nruns < max_runs && regular(buf + (size_t)at * segment + h, thl))
                    runs[nruns++] = (fp_run){at, size};
                at += size;
            }
            start = i;
        }
    }
    for (uint32_t at = start; count - at >= 2; ) {
        uint32_t size = count - at < limit ? count - at : limit;
        if (nruns < max_runs && regular(buf + (size_t)at * segment + h, thl))
            runs[nruns++] = (fp_run){at, size};
        at += size;
    }
    return nruns;
}

int fp_join(const uint8_t *buf, uint32_t n, uint32_t segment, uint32_t h, fp_run run,
            uint8_t *hdr, struct iovec *iov, uint32_t *total)
{
    (void)n;
    const uint8_t *first = buf + (size_t)run.first * segment + h;
    const uint8_t *final = buf + (size_t)(run.first + run.count - 1) * segment + h;
    uint32_t hl = 20 + (first[32] >> 4) * 4u;
    uint32_t mss = segment - h - hl;
    uint32_t last = fp_be16(final + 2) - hl;
    uint32_t length = hl + mss * (run.count - 1) + last;
    uint8_t *ip = hdr + FP_VNET_HDR_LEN;
    memcpy(ip, first, hl);
    ip[33] |= final[33] & (FP_TCP_PSH | FP_TCP_FIN);
    fp_put_be16(ip + 2, (uint16_t)length);
    fp_set_ip_checksum(ip);
    /* NEEDS_CSUM: the TCP checksum field holds the pseudo-header sum, folded, not inverted */
    uint32_t pseudo = fp_be16(ip + 12) + fp_be16(ip + 14) + fp_be16(ip + 16) + fp_be16(ip + 18)
                      + 6 + (length - 20);
    while (pseudo >> 16)
        pseudo = (pseudo & 0xFFFF) + (pseudo >> 16);
    fp_put_be16(ip + 36, (uint16_t)pseudo);
    /* struct virtio_net_hdr, little-endian: flags, gso_type, hdr_len, gso_size, csum_* */
    uint8_t vnet[FP_VNET_HDR_LEN] = {FP_NEEDS_CSUM, FP_GSO_TCPV4, hl & 0xFF, hl >> 8,
                                     mss & 0xFF, mss >> 8, 20, 0, 16, 0};
    memcpy(hdr, vnet, sizeof vnet);
    iov[0] = (struct iovec){hdr, FP_VNET_HDR_LEN + hl};
    for (uint32_t i = 0; i < run.count; i++) {
        const uint8_t *row = buf + (size_t)(run.first + i) * segment + h;
        iov[1 + i] = (struct iovec){(void *)(row + hl), i + 1 < run.count ? mss : last};
    }
    *total = length;
    return 1 + (int)run.count;
}

int fp_tun_write(int fd, const struct iovec *iov, int iovcnt)
{
    for (;;) {
        if (writev(fd, iov, iovcnt) >= 0)
            return 0;
        if (errno != EINTR)
            return errno;
    }
}
